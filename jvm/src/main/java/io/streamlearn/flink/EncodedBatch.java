package io.streamlearn.flink;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Arrays;

/**
 * A micro-batch of encoded events in CSR form, filled by {@link EventEncoder#add} and handed to
 * Python as bytes ({@link #toBytes}), which {@code streamlearn.training.encoded_batch
 * .read_encoded_batch} turns into a {@code FeatureBatch} and labels.
 *
 * <p>Why it exists: crossing from the JVM into Python once per micro-batch instead of once per
 * event, with the features already hashed, leaves Python only the learning. The layout is chosen
 * so that numpy reads it without copying, with the float64 arrays 8-byte aligned (all
 * little-endian):
 *
 * <pre>
 * bytes 0-3   magic "SLE1"
 * u32 n_rows, u32 nnz, u32 kind (bit 0, the label kind: 0 float64 per row, 1 UTF-8 JSON
 *                               array; bit 1 (2): the rows' weights follow the labels)
 * f64 values[nnz]
 * f64 labels[n_rows]            (label kind 0 only)
 * f64 weights[n_rows]           (kind bit 1 only: some row weighs other than 1)
 * i32 offsets[n_rows + 1]
 * i32 indices[nnz]
 * u8  numeric[nnz]              (1: a number, 0: a string, list item or boolean)
 * UTF-8 JSON array of labels    (label kind 1 only; runs to the end)
 * </pre>
 *
 * <p>Labels: binary tasks give 0.0/1.0, regression the number (label kind 0); multiclass gives
 * the class as sent, a string or an integer (label kind 1). A row's weight is its event's
 * {@code weight} (1 when absent); a batch whose rows all weigh 1 carries none: its bytes
 * are what they were before events had weights. Not thread-safe: one per operator.
 */
public final class EncodedBatch {
    static final byte[] MAGIC = {'S', 'L', 'E', '1'};
    static final int HEADER = 16;
    static final int JSON_LABELS = 1;
    static final int WEIGHTS = 2;

    final int task;
    private int rows;
    private int nnz;
    private int[] offsets = new int[65];
    private int[] indices = new int[1024];
    private double[] values = new double[1024];
    private byte[] numeric = new byte[1024];
    private double[] labels = new double[64];
    private double[] weights = new double[64];
    // multiclass: the labels' JSON texts back to back, each row's end offset in labelEnds
    private byte[] labelJson;
    private int[] labelEnds;
    private int labelLen;

    /**
     * An empty batch for {@code task} ({@code regression}, {@code binary} or {@code multiclass}).
     *
     * @throws IllegalArgumentException for another task
     */
    public EncodedBatch(String task) {
        this.task = EventEncoder.taskCode(task);
        if (this.task == EventEncoder.MULTICLASS) {
            labelJson = new byte[512];
            labelEnds = new int[64];
        }
    }

    /** Events in the batch. */
    public int rows() {
        return rows;
    }

    /** Entries (non-zero features) in the batch. */
    public int entries() {
        return nnz;
    }

    /** Empty the batch, keeping its capacity. */
    public void reset() {
        rows = 0;
        nnz = 0;
        labelLen = 0;
    }

    /** The batch in the wire format described on the class. */
    public byte[] toBytes() {
        boolean json = task == EventEncoder.MULTICLASS;
        boolean weighted = weighted();
        int size = HEADER + 8 * nnz + (json ? 0 : 8 * rows) + (weighted ? 8 * rows : 0)
                + 4 * (rows + 1) + 4 * nnz + nnz;
        int labelStart = size;
        if (json) {
            size += 2 + labelLen + Math.max(0, rows - 1);
        }
        byte[] out = new byte[size];
        ByteBuffer buf = ByteBuffer.wrap(out).order(ByteOrder.LITTLE_ENDIAN);
        buf.put(MAGIC).putInt(rows).putInt(nnz)
                .putInt((json ? JSON_LABELS : 0) | (weighted ? WEIGHTS : 0));
        buf.asDoubleBuffer().put(values, 0, nnz);
        buf.position(buf.position() + 8 * nnz);
        if (!json) {
            buf.asDoubleBuffer().put(labels, 0, rows);
            buf.position(buf.position() + 8 * rows);
        }
        if (weighted) {
            buf.asDoubleBuffer().put(weights, 0, rows);
            buf.position(buf.position() + 8 * rows);
        }
        offsets[0] = 0;
        buf.asIntBuffer().put(offsets, 0, rows + 1);
        buf.position(buf.position() + 4 * (rows + 1));
        buf.asIntBuffer().put(indices, 0, nnz);
        buf.position(buf.position() + 4 * nnz);
        buf.put(numeric, 0, nnz);
        if (json) {
            int at = labelStart;
            out[at++] = '[';
            int from = 0;
            for (int r = 0; r < rows; r++) {
                if (r > 0) {
                    out[at++] = ',';
                }
                int to = labelEnds[r];
                System.arraycopy(labelJson, from, out, at, to - from);
                at += to - from;
                from = to;
            }
            out[at] = ']';
        }
        return out;
    }

    /** Whether some row weighs other than 1 (its bits: -0.0 and NaN count as other). */
    private boolean weighted() {
        long one = Double.doubleToRawLongBits(1.0);
        for (int r = 0; r < rows; r++) {
            if (Double.doubleToRawLongBits(weights[r]) != one) {
                return true;
            }
        }
        return false;
    }

    // -- filling (the encoder's side) --------------------------------------------------------

    int nnz() {
        return nnz;
    }

    /** The slot of entry {@code i}. */
    int slotAt(int i) {
        return indices[i];
    }

    /** The value of entry {@code i}. */
    double valueAt(int i) {
        return values[i];
    }

    /** Append one entry to the current (open) row. */
    void entry(int slot, double value, boolean isNumber) {
        if (nnz == indices.length) {
            int n = nnz * 2;
            indices = Arrays.copyOf(indices, n);
            values = Arrays.copyOf(values, n);
            numeric = Arrays.copyOf(numeric, n);
        }
        indices[nnz] = slot;
        values[nnz] = value;
        numeric[nnz] = isNumber ? (byte) 1 : (byte) 0;
        nnz++;
    }

    /** Close the current row with a numeric label (binary, regression) and its weight. */
    void endRow(double label, double weight) {
        growRows();
        labels[rows] = label;
        weights[rows] = weight;
        rows++;
        offsets[rows] = nnz;
    }

    /** Close the current row with a label given as its JSON text (multiclass), and its weight. */
    void endRow(byte[] json, int off, int len, double weight) {
        growRows();
        weights[rows] = weight;
        if (labelLen + len > labelJson.length) {
            labelJson = Arrays.copyOf(labelJson, Math.max(2 * labelJson.length, labelLen + len));
        }
        System.arraycopy(json, off, labelJson, labelLen, len);
        labelLen += len;
        labelEnds[rows] = labelLen;
        rows++;
        offsets[rows] = nnz;
    }

    /** Drop everything after the first {@code keepRows} rows and {@code keepNnz} entries. */
    void truncate(int keepRows, int keepNnz) {
        rows = keepRows;
        nnz = keepNnz;
        if (labelEnds != null) {
            labelLen = keepRows == 0 ? 0 : labelEnds[keepRows - 1];
        }
    }

    private void growRows() {
        if (rows + 2 > offsets.length) {
            offsets = Arrays.copyOf(offsets, 2 * offsets.length);
        }
        if (rows + 1 > labels.length) {
            labels = Arrays.copyOf(labels, 2 * labels.length);
            weights = Arrays.copyOf(weights, labels.length);
            if (labelEnds != null) {
                labelEnds = Arrays.copyOf(labelEnds, labels.length);
            }
        }
    }
}
