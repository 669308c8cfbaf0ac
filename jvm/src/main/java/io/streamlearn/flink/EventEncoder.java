package io.streamlearn.flink;

import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;
import java.nio.ByteOrder;
import java.util.List;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.io.NumberInput;

/**
 * Decodes, validates and hashes Kafka messages into {@link EncodedBatch}es in the JVM, with the
 * same results as Python's {@code EventDecoder(task).decode(message)} followed by {@code
 * FeatureHasher(bits, dense).encode_one(features)} for every valid event.
 *
 * <p>Why it exists: decoding and hashing ~40 features per event costs tens of microseconds in
 * Python, far too much for the training job's goals; here it costs about what Jackson needs
 * merely to tokenise the same bytes (see docs/performance.md), and Python only learns from ready
 * CSR batches.
 *
 * <p>Same results means: the same valid events in the same order; each event's entries in the
 * order of its features (lists expand in place, an empty list to no entry; a name given twice
 * keeps its first position and its last value, as a Python dict does), with the same slots and
 * the same signed values (numbers ±value and numeric; strings and list items ±1; booleans
 * ±1/±0, not numeric; dense names their own slot, +value, and true/false there is 1/0, not
 * numeric); the same labels (binary 0/1, regression the number, multiclass the class as sent);
 * and the same rejections: the event contract's code ({@code streamlearn/contract}, mirrored
 * in {@link Rules}), field and index, and the contract's text rendered from them, except for
 * the detail inside "bad JSON (...)", which is Jackson's or ours rather than orjson's. The
 * contract's conformance corpus is replayed through this class in the unit tests ({@code
 * CorpusReplayTest}). A dense feature given a string or a non-empty list is a rejection of the
 * one event ({@code features.dense_not_number}), as the contract says.
 *
 * <p>How: a hand-written scanner reads the usual shapes (one event, or an envelope {@code
 * {"events": [...]}} of events, with keys among {@code features, label, key, ts, id,
 * weight}, plain strings, numbers, booleans and lists of strings) straight from the bytes,
 * validating the JSON as strictly as orjson and looking names and values up by their bytes in
 * a {@link SlotCache}.
 * At the first doubt (anything unusual, any error) it hands over: an envelope item to {@link
 * TreeDecoder} alone, once a strict skip has found where the item ends; anything else the whole
 * message. {@link TreeDecoder} is the complete, line-for-line port of the Python rules, so the
 * fast path only ever has to be right about what it accepts.
 *
 * <p>Not thread-safe: one encoder per operator instance.
 */
public final class EventEncoder {
    static final int REGRESSION = 0;
    static final int BINARY = 1;
    static final int MULTICLASS = 2;
    private static final String[] TASKS = Rules.TASKS;

    private static final int K_FEATURES = 1;
    private static final int K_LABEL = 2;
    private static final int K_KEY = 4;
    private static final int K_TS = 8;
    private static final int K_ID = 16;
    private static final int K_WEIGHT = 32;
    private static final int MAX_SKIP_DEPTH = 64;
    private static final double[] POW10 = {
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
        1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22
    };

    private final int task;
    private final int maxFeatures;
    private final SlotCache cache;
    /** The layout's crosses, or null when it has none. */
    private final Crosses crosses;
    private final TreeDecoder tree;
    private int stamp;
    // how messages went: all by the scanner, with some items by the tree, all by the tree
    long scanned;
    long itemsByTree;
    long byTree;

    // the message being scanned
    private byte[] m;
    private int end;
    // the last number scanned: m[numStart, numEnd)
    private int numStart;
    private int numEnd;
    private boolean numFloat;
    private boolean numBig; // more than 18 digits (or a long exponent): not exact in numInt
    private int numExp10;
    private long numInt;
    private boolean numNull; // what nullOrNumber read was null
    private char[] chars = new char[64];
    // the label and weight of the event being scanned
    private double label;
    private double weight;
    private int labelOff;
    private int labelLen;

    /**
     * An encoder for one task and one hashing layout.
     *
     * @param task {@code regression}, {@code binary} or {@code multiclass}: what a valid label is
     * @param bits hashed features go to {@code 2^bits} slots (1 to 30), as {@code
     *     FeatureHasher(bits)}
     * @param dense names of numeric features with their own slots after the hashed ones, in order
     * @param maxFeatures events with more features are rejected (as {@code EventDecoder})
     * @throws IllegalArgumentException naming the argument that is wrong
     */
    public EventEncoder(String task, int bits, String[] dense, int maxFeatures) {
        this(task, bits, dense, maxFeatures, 1 << 20);
    }

    /** As above, remembering at most {@code cacheSize} hashed names and values. */
    public EventEncoder(String task, int bits, String[] dense, int maxFeatures, int cacheSize) {
        this(task, bits, dense, new String[0][], maxFeatures, cacheSize);
    }

    /**
     * As above, with {@code crosses}: pairs of feature names whose entries are crossed after
     * each event's own (the contract's {@code cross_entry}, as {@code FeatureHasher(crosses)}).
     */
    public EventEncoder(String task, int bits, String[] dense, String[][] crosses,
            int maxFeatures, int cacheSize) {
        this.task = taskCode(task);
        if (bits < 1 || bits > ContractRules.MAX_BITS) {
            throw new IllegalArgumentException("bits: expected an integer from 1 to "
                    + ContractRules.MAX_BITS + ", got " + bits);
        }
        if (dense == null) {
            throw new IllegalArgumentException("dense: expected a list of feature names, got null");
        }
        java.util.Set<String> distinct = new java.util.HashSet<>();
        for (String name : dense) {
            if (name == null || !distinct.add(name)) {
                throw new IllegalArgumentException(
                        "dense: expected distinct feature names, got " + java.util.Arrays.toString(dense));
            }
        }
        if (maxFeatures < 1) {
            throw new IllegalArgumentException(
                    "maxFeatures: expected a positive integer, got " + maxFeatures);
        }
        if (crosses == null) {
            throw new IllegalArgumentException("crosses: expected a list of pairs, got null");
        }
        this.maxFeatures = maxFeatures;
        this.crosses = crosses.length == 0 ? null : new Crosses(crosses, bits);
        this.cache = new SlotCache(bits, dense.clone(), cacheSize, this.crosses);
        this.tree = new TreeDecoder(this.task, maxFeatures, cache, this.crosses);
    }

    static int taskCode(String task) {
        for (int i = 0; i < TASKS.length; i++) {
            if (TASKS[i].equals(task)) {
                return i;
            }
        }
        throw new IllegalArgumentException(
                "task: expected one of regression, binary, multiclass, got " + task);
    }

    /**
     * Decode one Kafka message value (one event or an envelope {"events": [...]}), append its
     * valid events to {@code batch} and its rejections to {@code rejected}; returns the number of
     * valid events appended. Never throws on bad input (a null message is an empty one).
     *
     * @throws IllegalArgumentException if {@code batch} was made for another task
     */
    public int add(byte[] message, EncodedBatch batch, List<Rejection> rejected) {
        if (batch.task != task) {
            throw new IllegalArgumentException("batch: expected a batch for task " + TASKS[task]
                    + ", got one for " + TASKS[batch.task]);
        }
        byte[] msg = message == null ? new byte[0] : message;
        int rows0 = batch.rows();
        int nnz0 = batch.nnz();
        int rejected0 = rejected.size();
        try {
            int n = scanMessage(msg, batch, rejected);
            if (n >= 0) {
                scanned++;
                return n;
            }
        } catch (RuntimeException outOfBytes) {
            // a message cut short (or anything unexpected): the complete path decides
        } finally {
            m = null;
        }
        batch.truncate(rows0, nnz0);
        while (rejected.size() > rejected0) {
            rejected.remove(rejected.size() - 1);
        }
        byTree++;
        try {
            return tree.add(msg, batch, rejected);
        } catch (RuntimeException | StackOverflowError e) {
            batch.truncate(rows0, nnz0);
            while (rejected.size() > rejected0) {
                rejected.remove(rejected.size() - 1);
            }
            rejected.add(Rejection.of("message.not_json", null, msg,
                    "detail", "a message that could not be decoded: " + e));
            return 0;
        }
    }

    // -- the fast scanner: returns -1 at the first doubt -----------------------------------------

    private int scanMessage(byte[] msg, EncodedBatch batch, List<Rejection> rejected) {
        m = msg;
        end = msg.length;
        int p = ws(0);
        if (p >= end || m[p] != '{') {
            return -1;
        }
        int q = ws(p + 1);
        if (!word(q, EVENTS)) {
            int e = event(p, batch);
            return e >= 0 && ws(e) == end ? 1 : -1;
        }
        q = ws(q + EVENTS.length);
        if (m[q] != ':') {
            return -1;
        }
        q = ws(q + 1);
        if (m[q] != '[') {
            return -1;
        }
        q = ws(q + 1);
        int valid = 0;
        if (m[q] == ']') {
            return -1; // no events: a rejection, which the complete path writes
        }
        for (int index = 0; ; index++) {
            int rows0 = batch.rows();
            int nnz0 = batch.nnz();
            int e = event(q, batch);
            if (e >= 0) {
                valid++;
            } else {
                batch.truncate(rows0, nnz0);
                e = skipValue(q, 0);
                if (e < 0) {
                    return -1;
                }
                int r = tree.addItem(m, q, e, index, batch, rejected);
                if (r < 0) {
                    return -1;
                }
                itemsByTree++;
                valid += r;
            }
            q = ws(e);
            if (m[q] == ',') {
                q = ws(q + 1);
            } else if (m[q] == ']') {
                q++;
                break;
            } else {
                return -1;
            }
        }
        q = ws(q);
        if (m[q] != '}') {
            return -1;
        }
        return ws(q + 1) == end ? valid : -1;
    }

    private static final byte[] EVENTS = ascii("\"events\"");
    private static final byte[] FEATURES = ascii("\"features\"");
    private static final byte[] LABEL = ascii("\"label\"");
    private static final byte[] KEY = ascii("\"key\"");
    private static final byte[] TS = ascii("\"ts\"");
    private static final byte[] ID = ascii("\"id\"");
    private static final byte[] WEIGHT = ascii("\"weight\"");
    private static final byte[] TRUE = ascii("true");
    private static final byte[] FALSE = ascii("false");
    private static final byte[] NULL = ascii("null");

    private static byte[] ascii(String s) {
        return s.getBytes(java.nio.charset.StandardCharsets.US_ASCII);
    }

    /** True if m[p...] starts with {@code w}. */
    private boolean word(int p, byte[] w) {
        if (p + w.length > end) {
            return false;
        }
        for (int i = 0; i < w.length; i++) {
            if (m[p + i] != w[i]) {
                return false;
            }
        }
        return true;
    }

    private int ws(int p) {
        byte[] b = m;
        while (p < end) {
            byte c = b[p];
            if (c > ' ' || (c != ' ' && c != '\n' && c != '\r' && c != '\t')) {
                break;
            }
            p++;
        }
        return p;
    }

    /** One event object at {@code p}, appended as a row; its end, or -1. */
    private int event(int p, EncodedBatch batch) {
        if (m[p] != '{') {
            return -1;
        }
        cache.bound();
        int ev = ++stamp;
        if (crosses != null) {
            crosses.begin();
        }
        int seen = 0;
        weight = 1.0;
        p = ws(p + 1);
        while (true) {
            int bit;
            byte[] key;
            if (m[p] != '"') {
                return -1;
            }
            switch (m[p + 1]) {
                case 'f' -> { bit = K_FEATURES; key = FEATURES; }
                case 'l' -> { bit = K_LABEL; key = LABEL; }
                case 'k' -> { bit = K_KEY; key = KEY; }
                case 't' -> { bit = K_TS; key = TS; }
                case 'i' -> { bit = K_ID; key = ID; }
                case 'w' -> { bit = K_WEIGHT; key = WEIGHT; }
                default -> { return -1; }
            }
            if ((seen & bit) != 0 || !word(p, key)) {
                return -1;
            }
            seen |= bit;
            p = ws(p + key.length);
            if (m[p] != ':') {
                return -1;
            }
            p = ws(p + 1);
            switch (bit) {
                case K_FEATURES -> p = features(p, batch, ev);
                case K_LABEL -> p = label(p);
                case K_TS -> p = ts(p);
                case K_WEIGHT -> p = weight(p);
                default -> p = keyOrId(p);
            }
            if (p < 0) {
                return -1;
            }
            p = ws(p);
            if (m[p] == ',') {
                p = ws(p + 1);
            } else if (m[p] == '}') {
                break;
            } else {
                return -1;
            }
        }
        if ((seen & (K_FEATURES | K_LABEL)) != (K_FEATURES | K_LABEL)) {
            return -1;
        }
        if (crosses != null && !crosses.append(batch, maxFeatures)) {
            return -1; // too many crossed entries: the complete path names the rejection
        }
        if (task == MULTICLASS) {
            batch.endRow(m, labelOff, labelLen, weight);
        } else {
            batch.endRow(label, weight);
        }
        return p + 1;
    }

    private int features(int p, EncodedBatch batch, int ev) {
        if (m[p] != '{') {
            return -1;
        }
        p = ws(p + 1);
        int count = 0;
        SlotCache cache = this.cache;
        SlotCache.Name prev = null;
        while (true) {
            if (m[p] != '"') {
                return -1;
            }
            // events of a stream mostly repeat one schema: try the name that followed the
            // previous one last time (its bytes were checked when it was first read)
            SlotCache.Name n = prev == null ? cache.first : prev.next;
            int e;
            if (n != null && (e = p + 1 + n.bytes.length) < end && m[e] == '"'
                    && (p + 9 <= end && n.bytes.length <= 8
                            ? ((long) LONG_LE.get(m, p + 1) & n.mask8) == n.head8
                            : SlotCache.same(n.bytes, m, p + 1, n.bytes.length))) {
                // found without hashing
            } else {
                e = stringEnd(p + 1);
                if (e <= p + 1) { // bad string, or the empty name
                    return -1;
                }
                n = cache.name(m, p + 1, e - p - 1);
                if (prev == null) {
                    cache.first = n;
                } else {
                    prev.next = n;
                }
            }
            prev = n;
            if (n.seen == ev) { // a name given twice: the complete path keeps Python's order
                return -1;
            }
            n.seen = ev;
            count++;
            p = ws(e + 1);
            if (m[p] != ':') {
                return -1;
            }
            p = ws(p + 1);
            int at = batch.nnz();
            byte c = m[p];
            if (c == '"') {
                if (n.dense) {
                    return -1;
                }
                p = stringValue(n, p + 1, batch);
                if (p < 0) {
                    return -1;
                }
            } else if (c == '-' || (c >= '0' && c <= '9')) {
                p = number(p);
                if (p < 0) {
                    return -1;
                }
                double v = numValue();
                if (Double.isNaN(v)) {
                    return -1;
                }
                batch.entry(n.numSlot, n.numSign * v, true);
            } else if (c == 't' || c == 'f') {
                boolean t = c == 't';
                if (!word(p, t ? TRUE : FALSE)) {
                    return -1;
                }
                batch.entry(n.numSlot, n.numSign * (t ? 1.0 : 0.0), false); // dense too
                p += t ? 4 : 5;
            } else if (c == '[') {
                p = ws(p + 1);
                if (m[p] != ']') {
                    if (n.dense) { // a dense name takes only the empty list
                        return -1;
                    }
                    while (true) {
                        if (m[p] != '"') {
                            return -1;
                        }
                        p = stringValue(n, p + 1, batch);
                        if (p < 0) {
                            return -1;
                        }
                        p = ws(p);
                        if (m[p] == ',') {
                            p = ws(p + 1);
                        } else if (m[p] == ']') {
                            break;
                        } else {
                            return -1;
                        }
                    }
                }
                p++;
            } else {
                return -1;
            }
            if (n.cross >= 0) {
                crosses.mark(n.cross, at, batch.nnz());
            }
            p = ws(p);
            if (m[p] == ',') {
                p = ws(p + 1);
            } else if (m[p] == '}') {
                break;
            } else {
                return -1;
            }
        }
        return count > maxFeatures ? -1 : p + 1;
    }

    /**
     * The string value whose first byte is at {@code q}, under {@code n}, appended as an entry;
     * returns the position after its closing quote, or -1. Keys of up to 7 plain ASCII bytes are
     * packed while they are read and looked up without a second pass.
     */
    private int stringValue(SlotCache.Name n, int q, EncodedBatch batch) {
        byte[] b = m;
        long x = 0;
        int k = 0;
        while (k < 8) {
            byte ch = b[q + k];
            if (ch == '"') {
                break;
            }
            if (ch < 0x20 || ch == '\\') { // control characters, escapes, and non-ASCII bytes
                k = 8;
                break;
            }
            x |= (ch & 0xFFL) << (k << 3);
            k++;
        }
        int entry;
        int after;
        if (k < 8) {
            entry = cache.shortValue(n, x | ((long) k << 56), b, q, k);
            after = q + k + 1;
        } else {
            int e = stringEnd(q);
            if (e < 0) {
                return -1;
            }
            entry = cache.value(n, b, q, e - q);
            after = e + 1;
        }
        batch.entry(entry & 0x7FFFFFFF, entry < 0 ? -1.0 : 1.0, false);
        return after;
    }

    private int label(int p) {
        byte c = m[p];
        switch (task) {
            case BINARY -> {
                if (c == 't' || c == 'f') {
                    boolean t = c == 't';
                    if (!word(p, t ? TRUE : FALSE)) {
                        return -1;
                    }
                    label = t ? 1.0 : 0.0;
                    return p + (t ? 4 : 5);
                }
                if (c != '-' && (c < '0' || c > '9')) {
                    return -1;
                }
                int e = number(p);
                if (e < 0 || numBig) {
                    return -1;
                }
                double v = numFloat ? numValue() : numInt;
                if (v != 0.0 && v != 1.0) {
                    return -1;
                }
                label = v == 0.0 ? 0.0 : 1.0;
                return e;
            }
            case REGRESSION -> {
                if (c != '-' && (c < '0' || c > '9')) {
                    return -1;
                }
                int e = number(p);
                if (e < 0) {
                    return -1;
                }
                double v = numValue();
                if (Double.isNaN(v)) {
                    return -1;
                }
                label = v;
                return e;
            }
            default -> {
                int e;
                if (c == '"') {
                    e = stringEnd(p + 1);
                    if (e <= p + 1) { // the empty class is refused; the complete path says so
                        return -1;
                    }
                    e++;
                } else if (c == '-' || (c >= '0' && c <= '9')) {
                    e = number(p);
                    if (e < 0 || numFloat || numBig) {
                        return -1;
                    }
                } else {
                    return -1;
                }
                labelOff = p;
                labelLen = e - p;
                return e;
            }
        }
    }

    /**
     * A null or a JSON number at {@code p}: its end (for a number, the num* fields set and
     * {@code numNull} false), or -1 for anything else.
     */
    private int nullOrNumber(int p) {
        byte c = m[p];
        numNull = c == 'n';
        if (numNull) {
            return word(p, NULL) ? p + 4 : -1;
        }
        if (c != '-' && (c < '0' || c > '9')) {
            return -1;
        }
        return number(p);
    }

    private int ts(int p) {
        int e = nullOrNumber(p);
        return e < 0 || numNull ? e : numFloat || numBig || numInt < 0 ? -1 : e;
    }

    /** A weight: null (1), or a number >= 0 read exactly; anything else is left to the tree. */
    private int weight(int p) {
        int e = nullOrNumber(p);
        if (e < 0 || numNull) {
            return e;
        }
        double v = numValue();
        if (!(v >= 0.0)) { // negative, or NaN: where the complete path decides
            return -1;
        }
        weight = v;
        return e;
    }

    private int keyOrId(int p) {
        byte c = m[p];
        if (c == '"') {
            int e = stringEnd(p + 1);
            return e < 0 ? -1 : e + 1;
        }
        if (c == 'n') {
            return word(p, NULL) ? p + 4 : -1;
        }
        if (c == 't') {
            return word(p, TRUE) ? p + 4 : -1;
        }
        if (c == 'f') {
            return word(p, FALSE) ? p + 5 : -1;
        }
        if (c != '-' && (c < '0' || c > '9')) {
            return -1;
        }
        int e = number(p);
        return e < 0 || numFloat || numBig ? -1 : e;
    }

    /**
     * The closing quote of a plain string whose first byte is at {@code i}: no escapes, no
     * control characters, well-formed UTF-8; else -1.
     */
    private int stringEnd(int i) {
        byte[] b = m;
        while (true) {
            byte c = b[i];
            if (c == '"') {
                return i;
            }
            if (c >= 0x20 && c != '\\') {
                i++;
            } else if (c < 0) {
                int n = JsonOut.utf8Sequence(b, i, end);
                if (n < 0) {
                    return -1;
                }
                i += n;
            } else {
                return -1;
            }
        }
    }

    /**
     * A JSON number at {@code p} (strict grammar); its end, or -1. Sets the num* fields: the
     * digits as one integer (exact up to 18 digits) and the power of ten that scales it.
     */
    private int number(int p) {
        byte[] b = m;
        int s = p;
        boolean neg = b[p] == '-';
        if (neg) {
            p++;
        }
        if (p >= end) {
            return -1;
        }
        int d0 = p;
        long v = 0;
        byte c = b[p];
        if (c == '0') {
            p++;
        } else if (c >= '1' && c <= '9') {
            while (p + 8 <= end && eightDigits(b, p)) {
                v = v * 100_000_000 + parseEight(b, p);
                p += 8;
            }
            while (p < end && (c = b[p]) >= '0' && c <= '9') {
                v = v * 10 + (c - '0');
                p++;
            }
        } else {
            return -1;
        }
        int digits = p - d0;
        int exp10 = 0;
        boolean isFloat = false;
        if (p < end && b[p] == '.') {
            isFloat = true;
            int f0 = ++p;
            while (p + 8 <= end && eightDigits(b, p)) {
                v = v * 100_000_000 + parseEight(b, p);
                p += 8;
            }
            while (p < end && (c = b[p]) >= '0' && c <= '9') {
                v = v * 10 + (c - '0');
                p++;
            }
            if (p == f0) {
                return -1;
            }
            digits += p - f0;
            exp10 = f0 - p;
        }
        if (p < end && (b[p] == 'e' || b[p] == 'E')) {
            isFloat = true;
            p++;
            boolean eneg = p < end && b[p] == '-';
            if (p < end && (b[p] == '+' || b[p] == '-')) {
                p++;
            }
            int e0 = p;
            int e = 0;
            while (p < end && (c = b[p]) >= '0' && c <= '9') {
                e = e * 10 + (c - '0');
                p++;
            }
            if (p == e0) {
                return -1;
            }
            if (p - e0 > 4) {
                digits = Integer.MAX_VALUE; // not the fast path's business
            }
            exp10 += eneg ? -e : e;
        }
        numStart = s;
        numEnd = p;
        numFloat = isFloat;
        numBig = digits > 18;
        numInt = neg ? -v : v;
        numExp10 = exp10;
        return p;
    }

    private static final VarHandle LONG_LE =
            MethodHandles.byteArrayViewVarHandle(long[].class, ByteOrder.LITTLE_ENDIAN);

    /** True if {@code b[p, p+8)} are eight ASCII digits (all bytes checked at once). */
    private static boolean eightDigits(byte[] b, int p) {
        long x = (long) LONG_LE.get(b, p);
        return (((x + 0x4646464646464646L) | (x - 0x3030303030303030L)) & 0x8080808080808080L) == 0;
    }

    /** The eight ASCII digits {@code b[p, p+8)} as a number, in three multiplications. */
    private static long parseEight(byte[] b, int p) {
        long x = (long) LONG_LE.get(b, p) - 0x3030303030303030L;
        x = x * 10 + (x >>> 8);
        return (((x & 0x000000FF000000FFL) * 0x000F424000000064L)
                + (((x >>> 16) & 0x000000FF000000FFL) * 0x0000271000000001L)) >>> 32;
    }

    /** The value of the last number as a double; NaN where the complete path must decide. */
    private double numValue() {
        if (!numFloat) {
            return numBig ? Double.NaN : (double) numInt;
        }
        long mant = Math.abs(numInt);
        int exp10 = numExp10;
        if (!numBig && mant <= (1L << 53) && exp10 >= -22 && exp10 <= 22) {
            // both exact in a double: one correctly rounded operation (Clinger's fast path)
            double d = exp10 < 0 ? (double) mant / POW10[-exp10] : (double) mant * POW10[exp10];
            return m[numStart] == '-' ? -d : d;
        }
        int len = numEnd - numStart;
        if (chars.length < len) {
            chars = new char[2 * len];
        }
        for (int i = 0; i < len; i++) {
            chars[i] = (char) m[numStart + i];
        }
        double d = NumberInput.parseDouble(chars, 0, len, true);
        return Double.isInfinite(d) ? Double.NaN : d;
    }

    /**
     * The end of the JSON value at {@code p}, checked as strictly as orjson checks it, or -1 at
     * anything this skip does not vouch for (the complete path then decides).
     */
    private int skipValue(int p, int depth) {
        if (depth > MAX_SKIP_DEPTH) {
            return -1;
        }
        byte c = m[p];
        switch (c) {
            case '{' -> {
                p = ws(p + 1);
                if (m[p] == '}') {
                    return p + 1;
                }
                while (true) {
                    if (m[p] != '"') {
                        return -1;
                    }
                    p = skipString(p + 1);
                    if (p < 0) {
                        return -1;
                    }
                    p = ws(p);
                    if (m[p] != ':') {
                        return -1;
                    }
                    p = skipValue(ws(p + 1), depth + 1);
                    if (p < 0) {
                        return -1;
                    }
                    p = ws(p);
                    if (m[p] == ',') {
                        p = ws(p + 1);
                    } else {
                        return m[p] == '}' ? p + 1 : -1;
                    }
                }
            }
            case '[' -> {
                p = ws(p + 1);
                if (m[p] == ']') {
                    return p + 1;
                }
                while (true) {
                    p = skipValue(p, depth + 1);
                    if (p < 0) {
                        return -1;
                    }
                    p = ws(p);
                    if (m[p] == ',') {
                        p = ws(p + 1);
                    } else {
                        return m[p] == ']' ? p + 1 : -1;
                    }
                }
            }
            case '"' -> {
                return skipString(p + 1);
            }
            case 't' -> {
                return word(p, TRUE) ? p + 4 : -1;
            }
            case 'f' -> {
                return word(p, FALSE) ? p + 5 : -1;
            }
            case 'n' -> {
                return word(p, NULL) ? p + 4 : -1;
            }
            default -> {
                if (c != '-' && (c < '0' || c > '9')) {
                    return -1;
                }
                int e = number(p);
                if (e < 0) {
                    return -1;
                }
                if (numFloat || numEnd - numStart > 15) {
                    String text = new String(m, numStart, numEnd - numStart,
                            java.nio.charset.StandardCharsets.US_ASCII);
                    if (Double.isInfinite(Double.parseDouble(text))) {
                        return -1; // orjson refuses the whole message
                    }
                }
                return e;
            }
        }
    }

    /** The end (after the quote) of a string whose first byte is at {@code i}, or -1. */
    private int skipString(int i) {
        byte[] b = m;
        while (true) {
            byte c = b[i];
            if (c == '"') {
                return i + 1;
            }
            if (c >= 0x20 && c != '\\') {
                i++;
            } else if (c < 0) {
                int n = JsonOut.utf8Sequence(b, i, end);
                if (n < 0) {
                    return -1;
                }
                i += n;
            } else if (c == '\\') {
                byte x = b[i + 1];
                if (x == 'u') {
                    int u = 0;
                    for (int k = 2; k < 6; k++) {
                        int d = Character.digit(b[i + k], 16);
                        if (d < 0) {
                            return -1;
                        }
                        u = u * 16 + d;
                    }
                    if (u >= 0xD800 && u <= 0xDFFF) {
                        return -1; // surrogates: the complete path checks their pairing
                    }
                    i += 6;
                } else if (x == '"' || x == '\\' || x == '/' || x == 'b' || x == 'f'
                        || x == 'n' || x == 'r' || x == 't') {
                    i += 2;
                } else {
                    return -1;
                }
            } else {
                return -1;
            }
        }
    }
}
