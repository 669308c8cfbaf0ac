package io.streamlearn.flink;

import java.util.HashMap;
import java.util.Map;

/**
 * The crosses of a hashing layout (the contract's {@code cross_entry}, like Vowpal Wabbit's
 * {@code -q}): for each declared pair of feature names present in an event, one entry per pair
 * of their entries, appended after the event's own.
 *
 * <p>Why it exists: a cross is computed from entries already encoded, so both of the encoder's
 * paths (the scan and the tree) only say where each crossed feature's entries lie in the batch
 * ({@link #mark}) and call {@link #append} before closing the row. Not thread-safe: one per
 * encoder.
 */
final class Crosses {
    private final Map<String, Integer> index = new HashMap<>();
    private final int[] first;
    private final int[] second;
    private final int bits;
    private final int[] from;
    private final int[] to;
    private final int[] stamp;
    private int event;

    /**
     * @param pairs pairs of distinct feature names, each pair once, at most {@code CROSS_LIMIT}
     * @throws IllegalArgumentException for anything else
     */
    Crosses(String[][] pairs, int bits) {
        if (pairs.length > ContractRules.CROSS_LIMIT) {
            throw new IllegalArgumentException("crosses: expected at most "
                    + ContractRules.CROSS_LIMIT + " pairs, got " + pairs.length);
        }
        this.bits = bits;
        first = new int[pairs.length];
        second = new int[pairs.length];
        java.util.Set<String> seen = new java.util.HashSet<>();
        for (int i = 0; i < pairs.length; i++) {
            String[] p = pairs[i];
            if (p == null || p.length != 2 || p[0] == null || p[1] == null || p[0].isEmpty()
                    || p[1].isEmpty() || p[0].equals(p[1]) || !seen.add(p[0] + "\u0000" + p[1])) {
                throw new IllegalArgumentException(
                        "crosses: expected distinct pairs of two different feature names, got "
                                + java.util.Arrays.deepToString(pairs));
            }
            first[i] = index.computeIfAbsent(p[0], k -> index.size());
            second[i] = index.computeIfAbsent(p[1], k -> index.size());
        }
        from = new int[index.size()];
        to = new int[index.size()];
        stamp = new int[index.size()];
    }

    /** The index of a crossed name, or -1 for a name no cross uses. */
    int indexOf(String name) {
        Integer i = index.get(name);
        return i == null ? -1 : i;
    }

    /** A new event begins: no crossed feature is marked. */
    void begin() {
        event++;
    }

    /** The entries of crossed name {@code k} in this event are {@code [start, end)}. */
    void mark(int k, int start, int end) {
        from[k] = start;
        to[k] = end;
        stamp[k] = event;
    }

    /** The entries this event's crosses add. */
    long count() {
        long n = 0;
        for (int i = 0; i < first.length; i++) {
            int a = first[i];
            int b = second[i];
            if (stamp[a] == event && stamp[b] == event) {
                n += (long) (to[a] - from[a]) * (to[b] - from[b]);
            }
        }
        return n;
    }

    /**
     * Append this event's crossed entries to {@code batch}; false (and nothing appended) when
     * they would be more than {@code max}.
     */
    boolean append(EncodedBatch batch, int max) {
        if (count() > max) {
            return false;
        }
        for (int i = 0; i < first.length; i++) {
            int a = first[i];
            int b = second[i];
            if (stamp[a] != event || stamp[b] != event) {
                continue;
            }
            for (int p = from[a]; p < to[a]; p++) {
                int slotA = batch.slotAt(p);
                double valueA = batch.valueAt(p);
                for (int q = from[b]; q < to[b]; q++) {
                    long h = FeatureHash.cross(slotA, batch.slotAt(q));
                    double product = valueA * batch.valueAt(q);
                    batch.entry(FeatureHash.slot(h, bits), h < 0 ? -product : product, false);
                }
            }
        }
        return true;
    }
}
