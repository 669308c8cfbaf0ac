package io.streamlearn.flink;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.math.BigInteger;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonFactory;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonLocation;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonParser;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonProcessingException;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonToken;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.StreamReadConstraints;

/**
 * The encoder's complete path: the message parsed with Jackson into Python-like values, then
 * checked and encoded by the event contract's rules, one by one, in the order of its reference
 * reading ({@code streamlearn/contract/reference.py}).
 *
 * <p>Why it exists: {@link EventEncoder}'s fast scanner only accepts well-formed events of the
 * usual shapes; everything else (every rejection, duplicate keys, escapes, unusual layouts) comes
 * here. A rule that fails names its contract code and the facts of the case; the field and the
 * text are rendered from them by {@link Rules}. Values are Python's: a JSON object is an insertion-ordered map in
 * which a repeated key keeps its first position and its last value (a Python dict), integers are
 * {@link Long} or, up to 2^64-1, {@link BigInteger}, and integers beyond orjson's range are
 * floats, as orjson reads them.
 *
 * <p>Jackson accepts a little more than orjson, so the differences are closed here: the
 * nesting limit is orjson's (1024), a number that overflows a double, a lone surrogate escape,
 * bytes that are not strict UTF-8, a byte order mark and content after the document are bad
 * JSON; no length limit applies to numbers and strings.
 */
final class TreeDecoder {
    static final JsonFactory FACTORY =
            JsonFactory.builder()
                    .streamReadConstraints(
                            StreamReadConstraints.builder()
                                    .maxNestingDepth(1024)
                                    .maxNumberLength(Integer.MAX_VALUE)
                                    .maxStringLength(Integer.MAX_VALUE)
                                    .maxNameLength(Integer.MAX_VALUE)
                                    .build())
                    .build();

    private static final String[] ALLOWED = Rules.EVENT_FIELDS;
    private static final BigInteger U64_MAX = BigInteger.ONE.shiftLeft(64).subtract(BigInteger.ONE);
    private static final BigInteger LONG_MIN = BigInteger.valueOf(Long.MIN_VALUE);

    /** Bad JSON, with orjson-like wording where it is ours to choose. */
    static final class BadJson extends Exception {
        private static final long serialVersionUID = 1L;

        BadJson(String message) {
            super(message, null, false, false);
        }
    }

    /** An event that failed: the contract's code of the rule, and the facts of the case. */
    private static final class Failed extends Exception {
        private static final long serialVersionUID = 1L;
        final String code;
        final transient Object[] facts;

        Failed(String code, Object[] facts) {
            super(code, null, false, false);
            this.code = code;
            this.facts = facts;
        }
    }

    private final int task;
    private final int maxFeatures;
    private final SlotCache cache;
    private final Crosses crosses; // null: none

    TreeDecoder(int task, int maxFeatures, SlotCache cache, Crosses crosses) {
        this.task = task;
        this.maxFeatures = maxFeatures;
        this.cache = cache;
        this.crosses = crosses;
    }

    // -- whole messages ------------------------------------------------------------------------

    /** Decode and encode one whole message; see {@link EventEncoder#add}. */
    int add(byte[] m, EncodedBatch batch, List<Rejection> rejected) {
        Object doc;
        List<int[]> slices = new ArrayList<>();
        Object[] eventsList = new Object[1];
        try {
            doc = parseMessage(m, slices, eventsList);
        } catch (BadJson e) {
            rejected.add(Rejection.of("message.not_json", null, m, "detail", e.getMessage()));
            return 0;
        }
        if (doc instanceof Map<?, ?> map && map.containsKey("events")
                && !map.containsKey("features")) {
            Object items = map.get("events");
            if (!(items instanceof List<?> list)) {
                rejected.add(Rejection.of("events.not_list", null, m, "value", items));
                return 0;
            }
            if (list.isEmpty()) { // a counted rejection, as in Python: never dropped unseen
                rejected.add(Rejection.of("events.empty", null, m));
                return 0;
            }
            boolean sliced = items == eventsList[0];
            int valid = 0;
            for (int i = 0; i < list.size(); i++) {
                byte[] raw = m; // (always sliced: "events" lists come from topObject)
                if (sliced) {
                    int[] s = slices.get(i);
                    raw = Arrays.copyOfRange(m, s[0], s[1]);
                }
                valid += event(list.get(i), i, raw, batch, rejected);
            }
            return valid;
        }
        return event(doc, null, m, batch, rejected);
    }

    /**
     * Decode and encode one envelope item, {@code m[start, end)}, already known to be one
     * well-formed JSON value. Returns 1 or 0 (valid or rejected), or -1 if Jackson disagrees
     * about the slice being JSON (the caller then decodes the whole message here).
     */
    int addItem(byte[] m, int start, int end, int index, EncodedBatch batch,
            List<Rejection> rejected) {
        Object item;
        try (JsonParser p = FACTORY.createParser(m, start, end - start)) {
            JsonToken t = p.nextToken();
            if (t == null) {
                return -1;
            }
            item = value(p, t);
            if (p.nextToken() != null) {
                return -1;
            }
        } catch (IOException | BadJson e) {
            return -1;
        }
        return event(item, index, Arrays.copyOfRange(m, start, end), batch, rejected);
    }

    private static Object parseMessage(byte[] m, List<int[]> slices, Object[] eventsList)
            throws BadJson {
        if (m.length == 0) {
            throw new BadJson("input is a zero-length, empty document");
        }
        if (m.length >= 3 && (m[0] & 0xFF) == 0xEF && (m[1] & 0xFF) == 0xBB
                && (m[2] & 0xFF) == 0xBF) {
            throw new BadJson("UTF-8 byte order mark (BOM) is not supported");
        }
        for (int i = 0; i < Math.min(4, m.length); i++) {
            if (m[i] == 0) { // Jackson would guess UTF-16/32 from NUL bytes up front
                throw new BadJson("unexpected character at char " + i);
            }
        }
        if (!JsonOut.isAscii(m, 0, m.length) && !JsonOut.isUtf8(m, 0, m.length)) {
            throw new BadJson("str is not valid UTF-8");
        }
        try (JsonParser p = FACTORY.createParser(m)) {
            JsonToken t = p.nextToken();
            if (t == null) {
                throw new BadJson("input data is empty");
            }
            Object doc;
            if (t == JsonToken.START_OBJECT) {
                doc = topObject(p, m, slices, eventsList);
            } else {
                doc = value(p, t);
            }
            if (p.nextToken() != null) {
                throw new BadJson("unexpected content after document at char "
                        + p.currentTokenLocation().getByteOffset());
            }
            return doc;
        } catch (JsonProcessingException e) {
            throw new BadJson(describe(e));
        } catch (IOException e) {
            throw new BadJson(String.valueOf(e.getMessage()));
        }
    }

    private static String describe(JsonProcessingException e) {
        String text = String.valueOf(e.getOriginalMessage()).replace('\n', ' ');
        JsonLocation at = e.getLocation();
        if (at != null) {
            text += ": line " + at.getLineNr() + " column " + at.getColumnNr()
                    + " (char " + at.getByteOffset() + ")";
        }
        return text;
    }

    /** The top-level object, remembering where each item of its "events" array lies. */
    private static Map<String, Object> topObject(
            JsonParser p, byte[] m, List<int[]> slices, Object[] eventsList)
            throws IOException, BadJson {
        Map<String, Object> map = new LinkedHashMap<>();
        JsonToken t;
        while ((t = p.nextToken()) != JsonToken.END_OBJECT) {
            String key = checked(p.currentName());
            t = p.nextToken();
            if (key.equals("events") && t == JsonToken.START_ARRAY) {
                List<Object> items = new ArrayList<>();
                slices.clear();
                t = p.nextToken();
                while (t != JsonToken.END_ARRAY) {
                    int start = (int) p.currentTokenLocation().getByteOffset();
                    items.add(value(p, t));
                    t = p.nextToken();
                    int end = (int) p.currentTokenLocation().getByteOffset();
                    while (isSpace(m[end - 1])) {
                        end--;
                    }
                    if (m[end - 1] == ',') {
                        end--;
                        while (isSpace(m[end - 1])) {
                            end--;
                        }
                    }
                    slices.add(new int[] {start, end});
                }
                map.put(key, items);
                eventsList[0] = items;
            } else {
                map.put(key, value(p, t));
            }
        }
        return map;
    }

    private static boolean isSpace(byte b) {
        return b == ' ' || b == '\t' || b == '\n' || b == '\r';
    }

    /** One JSON value as a Python-like value. */
    static Object value(JsonParser p, JsonToken t) throws IOException, BadJson {
        switch (t) {
            case START_OBJECT -> {
                Map<String, Object> map = new LinkedHashMap<>();
                while ((t = p.nextToken()) != JsonToken.END_OBJECT) {
                    String key = checked(p.currentName());
                    map.put(key, value(p, p.nextToken()));
                }
                return map;
            }
            case START_ARRAY -> {
                List<Object> list = new ArrayList<>();
                while ((t = p.nextToken()) != JsonToken.END_ARRAY) {
                    list.add(value(p, t));
                }
                return list;
            }
            case VALUE_STRING -> {
                return checked(p.getText());
            }
            case VALUE_NUMBER_INT -> {
                return integer(p.getText());
            }
            case VALUE_NUMBER_FLOAT -> {
                return finite(Double.parseDouble(p.getText()));
            }
            case VALUE_TRUE -> {
                return Boolean.TRUE;
            }
            case VALUE_FALSE -> {
                return Boolean.FALSE;
            }
            case VALUE_NULL -> {
                return null;
            }
            default -> throw new BadJson("unexpected token " + t);
        }
    }

    /** An integer literal as orjson reads it: int in [-2^63, 2^64-1], else a float. */
    private static Object integer(String text) throws BadJson {
        if (text.length() <= 18) {
            return Long.parseLong(text);
        }
        BigInteger big = new BigInteger(text);
        if (big.bitLength() <= 63) {
            return big.longValue();
        }
        if (big.signum() > 0 && big.compareTo(U64_MAX) <= 0) {
            return big;
        }
        if (big.equals(LONG_MIN)) {
            return Long.MIN_VALUE;
        }
        return finite(Double.parseDouble(text));
    }

    private static Double finite(double d) throws BadJson {
        if (Double.isInfinite(d)) {
            throw new BadJson("number is infinity when parsed as double");
        }
        return d;
    }

    /** A decoded string, refused if it holds a lone surrogate (orjson refuses those). */
    private static String checked(String s) throws BadJson {
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            if (Character.isSurrogate(c)) {
                if (Character.isHighSurrogate(c) && i + 1 < s.length()
                        && Character.isLowSurrogate(s.charAt(i + 1))) {
                    i++;
                    continue;
                }
                throw new BadJson("lone surrogate in string");
            }
        }
        return s;
    }

    // -- one event: events.py's _validate, then the hasher's checks, then encode_one ---------

    private int event(Object ev, Integer index, byte[] raw, EncodedBatch batch,
            List<Rejection> rejected) {
        cache.bound();
        try {
            Object label = validate(ev);
            encode(ev, label, batch);
            return 1;
        } catch (Failed f) {
            rejected.add(Rejection.of(f.code, index, raw, f.facts));
            return 0;
        }
    }

    /** A failure under the contract's rule {@code code}, with its facts (name, value pairs). */
    private static Failed fail(String code, Object... facts) {
        return new Failed(code, facts);
    }

    /** Checks the event; returns its label as the batch stores it (Double or JSON bytes). */
    private Object validate(Object ev) throws Failed {
        if (!(ev instanceof Map<?, ?>)) {
            throw fail("event.not_object", "value", ev);
        }
        @SuppressWarnings("unchecked")
        Map<String, Object> event = (Map<String, Object>) ev;
        String extra = null;
        for (String key : event.keySet()) {
            if (Arrays.binarySearch(ALLOWED, key) < 0
                    && (extra == null || compareCodePoints(key, extra) < 0)) {
                extra = key;
            }
        }
        if (extra != null) {
            throw fail("event.unknown_field", "name", extra);
        }
        Object features = event.get("features");
        if (features == null) { // absent or null: no features either way
            throw fail("features.missing");
        }
        if (!(features instanceof Map<?, ?> fmap)) {
            throw fail("features.not_object", "value", features);
        }
        if (fmap.isEmpty()) {
            throw fail("features.empty");
        }
        if (fmap.size() > maxFeatures) {
            throw fail("features.too_many", "count", fmap.size(), "max_features", maxFeatures);
        }
        for (Map.Entry<?, ?> e : fmap.entrySet()) {
            checkFeature((String) e.getKey(), e.getValue());
        }
        Object label;
        if (event.containsKey("label")) {
            label = checkLabel(event.get("label"));
        } else {
            throw fail("label.missing", "task", Rules.TASKS[task]);
        }
        for (String[] field : ContractRules.FIELD_KINDS) { // the contract's table
            Object value = event.get(field[0]);
            if (value != null && !fieldOk(field[1], value)) {
                throw fail(field[0] + ".invalid", "value", value);
            }
        }
        // what FeatureHasher.encode_one would refuse, as a rejection of this event
        for (Map.Entry<?, ?> e : fmap.entrySet()) {
            String name = (String) e.getKey();
            Object v = e.getValue();
            // a dense name takes numbers, true/false (1/0) and the empty list (no entry), as
            // the hasher does; a string or a list of strings it would refuse
            if ((v instanceof String || (v instanceof List<?> list && !list.isEmpty()))
                    && cache.isDense(name)) {
                throw fail("features.dense_not_number", "name", name, "value", v);
            }
        }
        if (crosses != null) {
            crosses.begin();
            for (Map.Entry<?, ?> e : fmap.entrySet()) {
                int k = crosses.indexOf((String) e.getKey());
                if (k >= 0) {
                    Object v = e.getValue(); // a list: one entry per item; else one
                    crosses.mark(k, 0, v instanceof List<?> list ? list.size() : 1);
                }
            }
            long count = crosses.count();
            if (count > maxFeatures) {
                throw fail("features.too_many_crossed", "count", count, "max_features",
                        maxFeatures);
            }
        }
        return label;
    }

    /** The contract's {@code field_ok}: whether {@code value} (not null) is of {@code kind}. */
    static boolean fieldOk(String kind, Object value) {
        return switch (kind) {
            case "name" -> value instanceof String || isInt(value) || value instanceof Boolean;
            case "time" -> isInt(value) && !(value instanceof Long l && l < 0)
                    && !(value instanceof BigInteger b && b.signum() < 0);
            case "weight" -> value instanceof Long l ? l >= 0
                    : value instanceof BigInteger b ? b.signum() >= 0 && b.compareTo(MAX_WEIGHT) <= 0
                    : value instanceof Double d && d >= 0 && d <= Double.MAX_VALUE; // NaN: no
            default -> throw new IllegalArgumentException("no field kind " + kind);
        };
    }

    /** The contract's largest weight, the largest double, as an integer. */
    private static final BigInteger MAX_WEIGHT =
            new java.math.BigDecimal(Double.MAX_VALUE).toBigInteger();

    /** The contract's {@code event_weight}: a checked weight as a double, 1 when absent. */
    static double weight(Object value) {
        if (value == null) {
            return 1.0;
        }
        return value instanceof BigInteger b ? b.doubleValue() : ((Number) value).doubleValue();
    }

    private static boolean isInt(Object v) {
        return v instanceof Long || v instanceof BigInteger;
    }

    /** Python's ordering of str: by code point. */
    static int compareCodePoints(String a, String b) {
        int i = 0;
        int j = 0;
        while (i < a.length() && j < b.length()) {
            int ca = a.codePointAt(i);
            int cb = b.codePointAt(j);
            if (ca != cb) {
                return Integer.compare(ca, cb);
            }
            i += Character.charCount(ca);
            j += Character.charCount(cb);
        }
        return Integer.compare(a.length() - i, b.length() - j);
    }

    private static void checkFeature(String name, Object value) throws Failed {
        if (name.isEmpty()) { // refused first, before looking at its value
            throw fail("features.empty_name");
        }
        if (value instanceof Double d) {
            if (Double.isNaN(d) || Double.isInfinite(d)) {
                throw fail("features.not_finite", "name", name, "value", d);
            }
        } else if (isInt(value) || value instanceof String || value instanceof Boolean) {
            return;
        } else if (value instanceof List<?> list) {
            for (Object item : list) {
                if (!(item instanceof String)) {
                    throw fail("features.bad_list_item", "name", name, "value", item);
                }
            }
        } else {
            throw fail("features.bad_value", "name", name, "value", value);
        }
    }

    private Object checkLabel(Object label) throws Failed {
        switch (task) {
            case EventEncoder.REGRESSION -> {
                if (label instanceof Long l) {
                    return (double) l;
                }
                if (label instanceof BigInteger b) {
                    return b.doubleValue();
                }
                if (label instanceof Double d && !d.isNaN() && !d.isInfinite()) {
                    return d;
                }
            }
            case EventEncoder.BINARY -> {
                if (label instanceof Boolean b) {
                    return b ? 1.0 : 0.0;
                }
                if (label instanceof Long l && (l == 0 || l == 1)) {
                    return (double) l;
                }
                if (label instanceof Double d && (d == 0.0 || d == 1.0)) {
                    return d == 0.0 ? 0.0 : 1.0;
                }
            }
            default -> {
                if (label instanceof String s && !s.isEmpty()) {
                    ByteArrayOutputStream out = new ByteArrayOutputStream();
                    JsonOut.string(out, s);
                    return out.toByteArray();
                }
                if (isInt(label)) {
                    return label.toString().getBytes(StandardCharsets.US_ASCII);
                }
            }
        }
        throw fail("label.invalid", "task", Rules.TASKS[task], "value", label);
    }

    private void encode(Object ev, Object label, EncodedBatch batch) {
        Map<?, ?> features = (Map<?, ?>) ((Map<?, ?>) ev).get("features");
        if (crosses != null) {
            crosses.begin();
        }
        for (Map.Entry<?, ?> e : features.entrySet()) {
            byte[] name = ((String) e.getKey()).getBytes(StandardCharsets.UTF_8);
            SlotCache.Name n = cache.name(name, 0, name.length);
            Object v = e.getValue();
            int at = batch.nnz();
            entries(n, v, batch);
            if (n.cross >= 0) {
                crosses.mark(n.cross, at, batch.nnz());
            }
        }
        if (crosses != null) {
            crosses.append(batch, Integer.MAX_VALUE); // counted when the event was checked
        }
        double weight = weight(((Map<?, ?>) ev).get("weight"));
        if (label instanceof Double d) {
            batch.endRow(d, weight);
        } else {
            byte[] json = (byte[]) label;
            batch.endRow(json, 0, json.length, weight);
        }
    }

    private void entries(SlotCache.Name n, Object v, EncodedBatch batch) {
        if (v instanceof Double d) {
            batch.entry(n.numSlot, n.numSign * d, true);
        } else if (v instanceof Long l) {
            batch.entry(n.numSlot, n.numSign * (double) l, true);
        } else if (v instanceof BigInteger b) {
            batch.entry(n.numSlot, n.numSign * b.doubleValue(), true);
        } else if (v instanceof Boolean b) {
            batch.entry(n.numSlot, n.numSign * (b ? 1.0 : 0.0), false);
        } else if (v instanceof String s) {
            stringEntry(n, s, batch);
        } else {
            for (Object item : (List<?>) v) {
                stringEntry(n, (String) item, batch);
            }
        }
    }

    private void stringEntry(SlotCache.Name n, String s, EncodedBatch batch) {
        byte[] b = s.getBytes(StandardCharsets.UTF_8);
        int entry = cache.value(n, b, 0, b.length);
        batch.entry(SlotCache.entrySlot(entry), SlotCache.entrySign(entry), false);
    }
}
