package io.streamlearn.flink;

import java.io.ByteArrayOutputStream;
import java.io.DataInputStream;
import java.io.EOFException;
import java.io.FileInputStream;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.PrintStream;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Base64;
import java.util.List;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonParser;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonToken;

/**
 * The encoder from the command line, for tests and benchmarks.
 *
 * <p>Why it exists: the differential tests compare {@link EventEncoder} with the Python
 * reference on thousands of messages in one JVM start, and the benchmark measures it against a
 * bare Jackson parse of the same messages in the same run.
 *
 * <p>Input (a file or {@code -} for stdin): messages, each a <b>big-endian</b> u32 length then
 * that many bytes. Modes:
 *
 * <pre>
 * encode (default)  --task T --bits B [--dense a,b] [--crosses a:b,c:d] [--max-features N]
 *                   [--cache-size N]
 *                   --in F --out F --rejections F [--each] [--dlq TOPIC,PARTITION,OFFSET,AT_MS]
 *     all messages into one batch (--out holds its bytes), or with --each one batch per
 *     message (--out holds, per message, a big-endian u32 length and the batch bytes);
 *     --rejections gets one JSON line per rejection: message (its number), code, field,
 *     reason, index, raw (base64), and with --dlq, dlq (base64 of Rejection.toDeadLetter,
 *     stage "train"); stderr
 *     gets one JSON line counting the messages read wholly by the fast scanner ("scanned"),
 *     the envelope items it left to the complete path, and the messages it left wholly.
 * --dead-letters    --in F --out F
 *     each message is a JSON array [stage, topic, partition, offset, index or null, field,
 *     reason, base64 of the raw bytes, at_ms]; --out gets, per message, a big-endian u32
 *     length and the bytes of DeadLetter.record for those arguments.
 * --rules           --out F
 *     the contract as the encoder holds it (ContractRules), one JSON object: max_features,
 *     max_bits, hash (the fields of the contract's HASH), tasks, event_fields,
 *     label_expected (by task), rules (code: [field, expected, got] templates) and join
 *     (the delayed-label join's outcome header and outcomes, JoinLogic's), for the tests
 *     that compare it with streamlearn.contract and streamlearn.joining.
 * --hash            --bits B --in F --out F
 *     each message is a JSON array [name, value or null]; one line out per message:
 *     name hash, value hash (0 for null), slot, sign, hex of the 64-byte BLAKE2b of the name
 *     personalised "sl.name".
 * --bench N         --task T --bits B [--dense ..] [--crosses ..] --in F [--flush ROWS]
 *     encodes every message N times (a batch turned to bytes every ROWS events, default
 *     1000), alternating with a bare Jackson parse that walks every token of the same
 *     messages and does nothing else; prints both rates and their ratio (ours / bare).
 * </pre>
 */
public final class EncodeTool {
    private EncodeTool() {}

    /** Runs one mode; exits with status 2 and a message naming the argument on a bad one. */
    public static void main(String[] args) throws IOException {
        Args a;
        try {
            a = new Args(args);
        } catch (IllegalArgumentException e) {
            System.err.println("EncodeTool: " + e.getMessage());
            System.exit(2);
            return;
        }
        if (a.rules) {
            try (OutputStream out = new FileOutputStream(a.out)) {
                out.write(rules());
            }
            return;
        }
        List<byte[]> messages = read(a.in.equals("-") ? System.in : new FileInputStream(a.in));
        if (a.deadLetters) {
            deadLetters(messages, a);
        } else if (a.hash) {
            hash(messages, a);
        } else if (a.bench > 0) {
            bench(messages, a, System.out);
        } else {
            encode(messages, a);
        }
    }

    static List<byte[]> read(InputStream stream) throws IOException {
        List<byte[]> out = new ArrayList<>();
        try (DataInputStream in = new DataInputStream(stream)) {
            while (true) {
                int n;
                try {
                    n = in.readInt();
                } catch (EOFException end) {
                    return out;
                }
                byte[] m = new byte[n];
                in.readFully(m);
                out.add(m);
            }
        }
    }

    private static void encode(List<byte[]> messages, Args a) throws IOException {
        EventEncoder encoder =
                new EventEncoder(a.task, a.bits, a.dense, a.crosses, a.maxFeatures, a.cacheSize);
        EncodedBatch batch = new EncodedBatch(a.task);
        List<Rejection> rejected = new ArrayList<>();
        try (OutputStream out = new FileOutputStream(a.out);
                OutputStream rej = new FileOutputStream(a.rejections)) {
            for (int i = 0; i < messages.size(); i++) {
                encoder.add(messages.get(i), batch, rejected);
                for (Rejection r : rejected) {
                    rej.write(rejectionLine(i, r, a.dlq));
                }
                rejected.clear();
                if (a.each) {
                    byte[] bytes = batch.toBytes();
                    out.write(ByteBuffer.allocate(4).putInt(bytes.length).array());
                    out.write(bytes);
                    batch.reset();
                }
            }
            if (!a.each) {
                out.write(batch.toBytes());
            }
        }
        System.err.println("{\"scanned\":" + encoder.scanned + ",\"items_by_tree\":"
                + encoder.itemsByTree + ",\"by_tree\":" + encoder.byTree + "}");
    }

    private static byte[] rejectionLine(int message, Rejection r, String[] dlq) {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        JsonOut.ascii(out, "{\"message\":" + message + ",\"code\":");
        JsonOut.string(out, r.code());
        JsonOut.ascii(out, ",\"field\":");
        JsonOut.string(out, r.field());
        JsonOut.ascii(out, ",\"reason\":");
        JsonOut.string(out, r.reason());
        JsonOut.ascii(out, ",\"index\":" + r.index() + ",\"raw\":\""
                + Base64.getEncoder().encodeToString(r.raw()) + "\"");
        if (dlq != null) {
            byte[] record = r.toDeadLetter("train", dlq[0], Integer.parseInt(dlq[1]),
                    Long.parseLong(dlq[2]), Long.parseLong(dlq[3]));
            JsonOut.ascii(out, ",\"dlq\":\"" + Base64.getEncoder().encodeToString(record) + "\"");
        }
        JsonOut.ascii(out, "}\n");
        return out.toByteArray();
    }

    /** The --rules document (see the class comment). */
    static byte[] rules() {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        JsonOut.ascii(out, "{\"max_features\":" + ContractRules.MAX_FEATURES
                + ",\"max_bits\":" + ContractRules.MAX_BITS + ",\"hash\":{\"algorithm\":");
        JsonOut.string(out, ContractRules.HASH_ALGORITHM);
        JsonOut.ascii(out, ",\"digest_size\":" + ContractRules.HASH_DIGEST_SIZE
                + ",\"name_person\":");
        JsonOut.string(out, ContractRules.HASH_NAME_PERSON);
        JsonOut.ascii(out, ",\"value_person\":");
        JsonOut.string(out, ContractRules.HASH_VALUE_PERSON);
        JsonOut.ascii(out, ",\"bits\":" + ContractRules.HASH_BITS
                + ",\"golden\":" + Long.toUnsignedString(ContractRules.HASH_GOLDEN)
                + ",\"mix_1\":" + Long.toUnsignedString(ContractRules.HASH_MIX_1)
                + ",\"mix_2\":" + Long.toUnsignedString(ContractRules.HASH_MIX_2)
                + ",\"shift\":" + ContractRules.HASH_SHIFT
                + ",\"cross_tag\":" + Long.toUnsignedString(ContractRules.HASH_CROSS_TAG)
                + "},\"cross_limit\":" + ContractRules.CROSS_LIMIT + ",\"tasks\":");
        strings(out, Rules.TASKS);
        JsonOut.ascii(out, ",\"event_fields\":");
        strings(out, Rules.EVENT_FIELDS);
        JsonOut.ascii(out, ",\"label_expected\":{");
        for (int t = 0; t < Rules.TASKS.length; t++) {
            JsonOut.ascii(out, t == 0 ? "" : ",");
            JsonOut.string(out, Rules.TASKS[t]);
            JsonOut.ascii(out, ":");
            JsonOut.string(out, Rules.LABEL_EXPECTED[t]);
        }
        JsonOut.ascii(out, "},\"rules\":{");
        boolean first = true;
        for (var e : Rules.RULES.entrySet()) {
            JsonOut.ascii(out, first ? "" : ",");
            first = false;
            JsonOut.string(out, e.getKey());
            JsonOut.ascii(out, ":");
            Rules.Rule r = e.getValue();
            strings(out, new String[] {r.field(), r.expected(), r.got()});
        }
        JsonOut.ascii(out, "},\"join\":{\"header\":");
        JsonOut.string(out, JoinLogic.HEADER);
        JsonOut.ascii(out, ",\"outcomes\":");
        strings(out, JoinLogic.OUTCOMES.toArray(new String[0]));
        JsonOut.ascii(out, "}}\n");
        return out.toByteArray();
    }

    private static void strings(ByteArrayOutputStream out, String[] items) {
        JsonOut.ascii(out, "[");
        for (int i = 0; i < items.length; i++) {
            JsonOut.ascii(out, i == 0 ? "" : ",");
            JsonOut.string(out, items[i]);
        }
        JsonOut.ascii(out, "]");
    }

    private static void deadLetters(List<byte[]> messages, Args a) throws IOException {
        try (OutputStream out = new FileOutputStream(a.out)) {
            for (byte[] msg : messages) {
                String[] text = new String[10];
                try (JsonParser p = TreeDecoder.FACTORY.createParser(msg)) {
                    p.nextToken();
                    for (int i = 0; i < text.length; i++) {
                        p.nextToken();
                        text[i] = p.currentToken() == JsonToken.VALUE_NULL ? null : p.getText();
                    }
                }
                byte[] record = DeadLetter.record(text[0], text[1], Integer.parseInt(text[2]),
                        Long.parseLong(text[3]), text[4] == null ? null : Integer.valueOf(text[4]),
                        text[5], text[6], text[7], Base64.getDecoder().decode(text[8]),
                        Long.parseLong(text[9]));
                out.write(ByteBuffer.allocate(4).putInt(record.length).array());
                out.write(record);
            }
        }
    }

    private static void hash(List<byte[]> messages, Args a) throws IOException {
        try (PrintStream out = new PrintStream(new FileOutputStream(a.out), false,
                StandardCharsets.UTF_8)) {
            byte[] person = "sl.name".getBytes(StandardCharsets.US_ASCII);
            for (byte[] msg : messages) {
                String name;
                String value;
                try (JsonParser p = TreeDecoder.FACTORY.createParser(msg)) {
                    p.nextToken();
                    p.nextToken();
                    name = p.getText();
                    value = p.nextToken() == JsonToken.VALUE_NULL ? null : p.getText();
                }
                long nameHash = FeatureHash.nameHash(name);
                long valueHash = value == null ? 0 : FeatureHash.valueHash(value);
                long mixed = FeatureHash.mix(nameHash, valueHash);
                StringBuilder hex = new StringBuilder();
                for (byte b : Blake2b.digest(name.getBytes(StandardCharsets.UTF_8), 64, person)) {
                    hex.append(String.format("%02x", b));
                }
                out.println(nameHash + " " + valueHash + " " + FeatureHash.slot(mixed, a.bits)
                        + " " + FeatureHash.sign(mixed) + " " + hex);
            }
        }
    }

    // -- the benchmark ---------------------------------------------------------------------------

    static void bench(List<byte[]> messages, Args a, PrintStream out) throws IOException {
        EventEncoder encoder =
                new EventEncoder(a.task, a.bits, a.dense, a.crosses, a.maxFeatures, 1 << 20);
        EncodedBatch batch = new EncodedBatch(a.task);
        List<Rejection> rejected = new ArrayList<>();
        long events = 0;
        long bytes = 0;
        for (byte[] m : messages) {
            events += encoder.add(m, batch, rejected);
            bytes += m.length;
            batch.reset();
        }
        if (!rejected.isEmpty()) {
            out.println("note: " + rejected.size() + " rejections, first: " + rejected.get(0));
        }
        int warm = Math.max(3, a.bench / 3);
        double[] ours = new double[a.bench];
        double[] bare = new double[a.bench];
        long sink = 0;
        for (int r = -warm; r < a.bench; r++) {
            long t0 = System.nanoTime();
            sink += bareParse(messages);
            long t1 = System.nanoTime();
            sink += encodeAll(encoder, batch, rejected, messages, a.flush);
            long t2 = System.nanoTime();
            if (r >= 0) {
                bare[r] = events / ((t1 - t0) / 1e9);
                ours[r] = events / ((t2 - t1) / 1e9);
            }
        }
        double[] ratios = new double[a.bench];
        for (int r = 0; r < a.bench; r++) {
            ratios[r] = ours[r] / bare[r];
        }
        out.printf("messages %d, events %d, %.0f bytes/event, %d rounds (+%d warm-up), sink %d%n",
                messages.size(), events, (double) bytes / events, a.bench, warm, sink % 10);
        out.printf("encoder (decode, validate, hash, toBytes every %d events): median %.0f"
                + " events/s (best %.0f)%n", a.flush, median(ours), max(ours));
        out.printf("bare Jackson token walk of the same bytes:             median %.0f"
                + " events/s (best %.0f)%n", median(bare), max(bare));
        out.printf("ratio ours / bare: median %.2f (per-round pairs)%n", median(ratios));
    }

    private static long encodeAll(EventEncoder encoder, EncodedBatch batch, List<Rejection> rejected,
            List<byte[]> messages, int flush) {
        long sink = 0;
        for (byte[] m : messages) {
            encoder.add(m, batch, rejected);
            if (batch.rows() >= flush) {
                sink += batch.toBytes().length;
                batch.reset();
            }
            rejected.clear();
        }
        sink += batch.toBytes().length;
        batch.reset();
        return sink;
    }

    /** The reference: Jackson's streaming parser walks every token, and nothing else. */
    private static long bareParse(List<byte[]> messages) throws IOException {
        long tokens = 0;
        for (byte[] m : messages) {
            try (JsonParser p = TreeDecoder.FACTORY.createParser(m)) {
                while (p.nextToken() != null) {
                    tokens++;
                }
            }
        }
        return tokens;
    }

    private static double median(double[] xs) {
        double[] s = xs.clone();
        Arrays.sort(s);
        int n = s.length;
        return n % 2 == 1 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
    }

    private static double max(double[] xs) {
        return Arrays.stream(xs).max().orElse(Double.NaN);
    }

    /** The command line, checked. */
    static final class Args {
        String task = "binary";
        int bits = 20;
        String[] dense = new String[0];
        String[][] crosses = new String[0][];
        int maxFeatures = Rules.MAX_FEATURES;
        int cacheSize = 1 << 20;
        String in = "-";
        String out;
        String rejections;
        boolean each;
        boolean hash;
        boolean deadLetters;
        boolean rules;
        int bench;
        int flush = 1000;
        String[] dlq;

        Args(String[] args) {
            for (int i = 0; i < args.length; i++) {
                String flag = args[i];
                if (flag.equals("--each")) {
                    each = true;
                    continue;
                }
                if (flag.equals("--hash")) {
                    hash = true;
                    continue;
                }
                if (flag.equals("--dead-letters")) {
                    deadLetters = true;
                    continue;
                }
                if (flag.equals("--rules")) {
                    rules = true;
                    continue;
                }
                if (i + 1 >= args.length) {
                    throw new IllegalArgumentException(flag + ": expected a value, got nothing");
                }
                String v = args[++i];
                switch (flag) {
                    case "--task" -> task = v;
                    case "--bits" -> bits = integer(flag, v);
                    case "--dense" -> dense = v.isEmpty() ? new String[0] : v.split(",", -1);
                    case "--crosses" -> crosses = crossPairs(v);
                    case "--max-features" -> maxFeatures = integer(flag, v);
                    case "--cache-size" -> cacheSize = integer(flag, v);
                    case "--in" -> in = v;
                    case "--out" -> out = v;
                    case "--rejections" -> rejections = v;
                    case "--bench" -> bench = integer(flag, v);
                    case "--flush" -> flush = integer(flag, v);
                    case "--dlq" -> {
                        dlq = v.split(",", -1);
                        if (dlq.length != 4) {
                            throw new IllegalArgumentException(
                                    "--dlq: expected TOPIC,PARTITION,OFFSET,AT_MS, got " + v);
                        }
                    }
                    default -> throw new IllegalArgumentException(
                            "expected one of --task --bits --dense --crosses --max-features"
                                    + " --cache-size --in --out"
                                    + " --rejections --each --dlq --dead-letters --rules --hash --bench"
                                    + " --flush, got "
                                    + flag);
                }
            }
            if (!hash && !deadLetters && !rules && bench == 0
                    && (out == null || rejections == null)) {
                throw new IllegalArgumentException(
                        "--out and --rejections: expected two file names, got " + out + ", "
                                + rejections);
            }
            if ((hash || deadLetters || rules) && out == null) {
                throw new IllegalArgumentException("--out: expected a file name, got nothing");
            }
        }

        /** {@code a:b,c:d} as pairs (the empty text: none). */
        private static String[][] crossPairs(String v) {
            if (v.isEmpty()) {
                return new String[0][];
            }
            String[] items = v.split(",", -1);
            String[][] pairs = new String[items.length][];
            for (int i = 0; i < items.length; i++) {
                pairs[i] = items[i].split(":", -1);
                if (pairs[i].length != 2) {
                    throw new IllegalArgumentException(
                            "--crosses: expected name:name pairs split by commas, got " + v);
                }
            }
            return pairs;
        }

        private static int integer(String flag, String v) {
            try {
                return Integer.parseInt(v);
            } catch (NumberFormatException e) {
                throw new IllegalArgumentException(flag + ": expected an integer, got " + v);
            }
        }
    }
}
