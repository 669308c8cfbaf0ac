package io.streamlearn.flink;

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.DataInput;
import java.io.DataInputStream;
import java.io.DataOutput;
import java.io.DataOutputStream;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.List;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonParser;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonToken;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.node.ObjectNode;

/**
 * The delayed-label join's rules for one id, in event time, without Flink: the JVM reading of
 * Python's {@code streamlearn.joining.join} (the reference; the join corpus,
 * {@code streamlearn/joining_corpus.jsonl}, proves them equal). {@code Join.Joiner} keeps a
 * {@link Slot} per id in Flink state and calls {@link #onRecord} and {@link #onTimer}.
 *
 * <p>An impression ({@code id}, {@code ts} or the prediction log's {@code at_ms}, the event's
 * features) waits {@code window_ms} for its label. A label is decided when the watermark passes
 * its {@code ts} (every label of the id up to it has arrived by then): the first label within
 * {@code [impression ts, impression ts + window_ms]} is the impression's ({@code joined}, learned
 * at once); a later one is a {@code duplicate}; one after the window is {@code late}; one with no
 * impression at or before it is {@code unmatched}. When the watermark passes the window's end
 * an impression without a label is learned with the default label ({@code expired}) or
 * {@code dropped}. The id is remembered {@code remember_ms} more, so a label after the window
 * is told {@code late}; after that it is {@code unmatched}. A second impression of an id is
 * {@code impression_duplicate}. Every record not learned goes to the dead-letter topic with its
 * reason (code {@code join.<reason>}); a dropped impression is counted.
 *
 * <p>The reference reads whole streams; the two agree when no record arrives behind the
 * watermark (its bounded disorder). A record behind it is decided by the same rules with what
 * the state still knows.
 */
public final class JoinLogic {
    public static final String JOINED = "joined";
    public static final String EXPIRED = "expired";
    public static final String DROPPED = "dropped";
    public static final String DUPLICATE = "duplicate";
    public static final String LATE = "late";
    public static final String UNMATCHED = "unmatched";
    public static final String IMPRESSION_DUPLICATE = "impression_duplicate";
    /** A record the join could not key or time (not JSON, no id, no ts, no label). */
    public static final String BAD = "bad";
    /** Every outcome a record of the join has, in the order reports list them. */
    public static final List<String> OUTCOMES = List.of(JOINED, EXPIRED, DROPPED, DUPLICATE,
            LATE, UNMATCHED, IMPRESSION_DUPLICATE, BAD);
    /**
     * The Kafka header of every record the join writes to the training topic: its outcome.
     * A joined event carries {@code joined} or {@code expired}; every other outcome is a
     * <em>tally</em> record, an empty value with the header, so the learners count each
     * outcome in the version lineage exactly once, committed with the checkpoint that covers
     * the join's state (Python's {@code streamlearn.joining.HEADER}).
     */
    public static final String HEADER = "streamlearn.join";
    /**
     * The fields of an impression a joined event keeps: every field of the event contract
     * but the label, which is the join's ({@code weight} included: an impression's importance
     * is the joined event's).
     */
    static final String[] KEPT = Arrays.stream(ContractRules.EVENT_FIELDS)
            .filter(name -> !name.equals("label")).toArray(String[]::new);

    /** The kept fields a plain impression's bytes carry unchanged (id and ts are read). */
    private static final java.util.Set<String> KEPT_AS_IS = java.util.Set.of(
            Arrays.stream(KEPT).filter(n -> !n.equals("id") && !n.equals("ts"))
                    .toArray(String[]::new));

    private static final ObjectMapper JSON = new ObjectMapper();

    private JoinLogic() {}

    /** The join's settings (the training configuration's {@code [join]} section). */
    public static final class Settings implements java.io.Serializable {
        private static final long serialVersionUID = 1L;
        final long windowMs;
        final long rememberMs;
        /** The default label's JSON text; null: an unlabelled impression is dropped. */
        final String defaultLabel;
        /** {@code join.keep = "last"}: the window's last label is the impression's, learned
         * when the window closes; else the first, learned when it is decided. */
        final boolean keepLast;

        public Settings(long windowMs, long rememberMs, String defaultLabel, boolean keepLast) {
            this.windowMs = windowMs;
            this.rememberMs = rememberMs;
            this.defaultLabel = defaultLabel;
            this.keepLast = keepLast;
        }

        /** From the configuration's {@code join} object (validated by Python's TrainConfig). */
        public static Settings of(JsonNode join) {
            boolean drop = "drop".equals(join.path("expire").asText());
            return new Settings(join.path("window_ms").asLong(), join.path("remember_ms").asLong(),
                    drop ? null : join.path("default").toString(),
                    "last".equals(join.path("keep").asText()));
        }
    }

    /** One record of either topic (an event of an envelope is one record), as the join keeps it. */
    public static final class Item {
        public final boolean label;
        public final String id;
        public final long ts;
        /** Arrival order within the id (ties of {@code ts} go to the first arrived). */
        long seq;
        public final String topic;
        public final int partition;
        public final long offset;
        /** The position in an envelope; -1 for a whole message. */
        public final int index;
        /** The record's bytes (an impression's kept until its window closes). */
        byte[] raw;
        /** A label's value, as JSON text. */
        String labelJson = "";
        /** An impression whose bytes are its joined event but the label: only the fields a
         * joined event keeps, {@code ts} among them (the event is spliced, not rebuilt). */
        boolean plain;

        public Item(boolean label, String id, long ts, String topic, int partition, long offset,
                int index, byte[] raw) {
            this.label = label;
            this.id = id;
            this.ts = ts;
            this.topic = topic;
            this.partition = partition;
            this.offset = offset;
            this.index = index;
            this.raw = raw;
        }

        public byte[] raw() {
            return raw;
        }

        /** What travels with the item besides its fields: a label's JSON text, or "+" for a
         * plain impression ({@link #plain}), "" otherwise. */
        public String extra() {
            return label ? labelJson : plain ? "+" : "";
        }

        /** An item from its fields and {@link #extra}. */
        public static Item of(boolean label, String id, long ts, String topic, int partition,
                long offset, int index, byte[] raw, String extra) {
            Item it = new Item(label, id, ts, topic, partition, offset, index, raw);
            it.labelJson = label ? extra : "";
            it.plain = !label && "+".equals(extra);
            return it;
        }

        void write(DataOutput out) throws IOException {
            out.writeBoolean(label);
            writeText(out, id);
            out.writeLong(ts);
            out.writeLong(seq);
            writeText(out, topic);
            out.writeInt(partition);
            out.writeLong(offset);
            out.writeInt(index);
            out.writeInt(raw.length);
            out.write(raw);
            writeText(out, labelJson);
            out.writeBoolean(plain);
        }

        static Item read(DataInput in) throws IOException {
            boolean label = in.readBoolean();
            String id = readText(in);
            long ts = in.readLong();
            long seq = in.readLong();
            Item it = new Item(label, id, ts, readText(in), in.readInt(), in.readLong(),
                    in.readInt(), new byte[in.readInt()]);
            in.readFully(it.raw);
            it.seq = seq;
            it.labelJson = readText(in);
            it.plain = in.readBoolean();
            return it;
        }
    }

    private static void writeText(DataOutput out, String text) throws IOException {
        byte[] bytes = text.getBytes(StandardCharsets.UTF_8);
        out.writeInt(bytes.length);
        out.write(bytes);
    }

    private static String readText(DataInput in) throws IOException {
        byte[] bytes = new byte[in.readInt()];
        in.readFully(bytes);
        return new String(bytes, StandardCharsets.UTF_8);
    }

    /** What the rules do, told to whoever runs them (the Flink operator, or a test). */
    public interface Out {
        /** An event to learn: the impression with its label; {@code how}: joined or expired. */
        void learn(Item impression, byte[] event, String how);

        /** An impression whose window closed unlabelled, with {@code expire = "drop"}. */
        void dropped(Item impression);

        /** A record not learned: to the dead-letter topic with {@code join.<reason>}. */
        void reject(Item record, String reason, String text);

        /** Call {@link #onTimer} for this id once the watermark reaches {@code at}. */
        void timer(long at);
    }

    /** What the join holds for one id. */
    public static final class Slot {
        Item impression;
        boolean joined;
        boolean closed;
        long nextSeq;
        final List<Item> pending = new ArrayList<>();
        /** With {@code keepLast}: the window's label so far, learned when the window closes. */
        Item kept;

        /** The slot's bytes (Flink's state serializer writes these; see {@code Join}). */
        public void write(DataOutput out) throws IOException {
            out.writeBoolean(impression != null);
            if (impression != null) {
                impression.write(out);
            }
            out.writeBoolean(joined);
            out.writeBoolean(closed);
            out.writeLong(nextSeq);
            out.writeInt(pending.size());
            for (Item it : pending) {
                it.write(out);
            }
            out.writeBoolean(kept != null);
            if (kept != null) {
                kept.write(out);
            }
        }

        public static Slot read(DataInput in) throws IOException {
            Slot s = new Slot();
            if (in.readBoolean()) {
                s.impression = Item.read(in);
            }
            s.joined = in.readBoolean();
            s.closed = in.readBoolean();
            s.nextSeq = in.readLong();
            int n = in.readInt();
            for (int i = 0; i < n; i++) {
                s.pending.add(Item.read(in));
            }
            if (in.readBoolean()) {
                s.kept = Item.read(in);
            }
            return s;
        }

        public byte[] toBytes() {
            ByteArrayOutputStream bytes = new ByteArrayOutputStream();
            try (DataOutputStream out = new DataOutputStream(bytes)) {
                write(out);
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
            return bytes.toByteArray();
        }

        public static Slot fromBytes(byte[] data) {
            try (DataInputStream in = new DataInputStream(new ByteArrayInputStream(data))) {
                return read(in);
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
        }
    }

    /**
     * A record arrives. Returns the slot to keep ({@code s}, or a new one when it was null).
     */
    public static Slot onRecord(Slot s, Item it, Settings cfg, Out out) {
        if (s == null) {
            s = new Slot();
        }
        it.seq = s.nextSeq++;
        Item imp = s.impression;
        if (!it.label) {
            if (imp != null) {
                out.reject(it, IMPRESSION_DUPLICATE, "impression of id " + quote(it.id)
                        + " at " + it.ts + " ms: the id already has an impression (at "
                        + imp.ts + " ms); the first one is the one joined");
                return s;
            }
            s.impression = it;
            out.timer(it.ts + cfg.windowMs);
            return s;
        }
        if (imp == null) {  // no impression yet: decided when the watermark passes its time
            s.pending.add(it);
            out.timer(it.ts);
        } else if (s.closed || s.joined || it.ts < imp.ts || it.ts > imp.ts + cfg.windowMs) {
            decide(s, it, cfg, out);
        } else {
            s.pending.add(it);
            out.timer(it.ts);
        }
        return s;
    }

    /**
     * The watermark reached {@code at}, a time {@link Out#timer} asked for. Returns the slot to
     * keep, or null when the id has nothing left to remember.
     */
    public static Slot onTimer(Slot s, long at, Settings cfg, Out out) {
        s.pending.sort(Comparator.comparingLong((Item it) -> it.ts).thenComparingLong(it -> it.seq));
        while (!s.pending.isEmpty() && s.pending.get(0).ts <= at) {
            decide(s, s.pending.remove(0), cfg, out);
        }
        Item imp = s.impression;
        if (imp != null && !s.closed && at >= imp.ts + cfg.windowMs) {
            if (s.kept != null) {  // keepLast: the window's last label
                s.joined = true;
                out.learn(imp, event(imp, s.kept.labelJson), JOINED);
                s.kept = null;
            } else if (!s.joined) {
                if (cfg.defaultLabel == null) {
                    out.dropped(imp);
                } else {
                    out.learn(imp, event(imp, cfg.defaultLabel), EXPIRED);
                }
            }
            s.closed = true;
            imp.raw = new byte[0];  // only its id and time are needed from now on
            while (!s.pending.isEmpty()) {  // all after the window
                decide(s, s.pending.remove(0), cfg, out);
            }
            if (cfg.rememberMs <= 0) {
                return null;
            }
            out.timer(imp.ts + cfg.windowMs + cfg.rememberMs);
        }
        if (imp != null && s.closed && at >= imp.ts + cfg.windowMs + cfg.rememberMs) {
            for (Item it : s.pending) {  // arrived behind the watermark, after the id's end
                out.reject(it, UNMATCHED, unmatched(it));
            }
            return null;
        }
        if (imp == null && s.pending.isEmpty()) {
            return null;
        }
        return s;
    }

    /** Decide one label against what the slot knows. */
    private static void decide(Slot s, Item it, Settings cfg, Out out) {
        Item imp = s.impression;
        if (imp == null || it.ts < imp.ts || it.ts > imp.ts + cfg.windowMs + cfg.rememberMs) {
            out.reject(it, UNMATCHED, unmatched(it));
        } else if (it.ts > imp.ts + cfg.windowMs) {
            out.reject(it, LATE, "label of id " + quote(it.id) + " at " + it.ts
                    + " ms: after its impression's window (impression at " + imp.ts
                    + " ms, window " + cfg.windowMs + " ms)");
        } else if (s.joined && !cfg.keepLast) {
            out.reject(it, DUPLICATE, "label of id " + quote(it.id) + " at " + it.ts
                    + " ms: the impression already has its label (the first within the window)");
        } else if (s.closed) {  // behind the watermark: the window closed before it came
            out.reject(it, LATE, "label of id " + quote(it.id) + " at " + it.ts
                    + " ms: arrived after its impression's window had closed (behind the "
                    + "watermark; raise join.disorder_ms)");
        } else if (cfg.keepLast) {  // kept until the window closes, unless a later one comes
            if (s.kept != null) {
                out.reject(s.kept, DUPLICATE, "label of id " + quote(it.id) + " at "
                        + s.kept.ts + " ms: a later label within the window replaced it (at "
                        + it.ts + " ms; join.keep = \"last\")");
            }
            s.kept = it;
        } else {
            s.joined = true;
            out.learn(imp, event(imp, it.labelJson), JOINED);
        }
    }

    private static String unmatched(Item it) {
        return "label of id " + quote(it.id) + " at " + it.ts
                + " ms: no impression of this id at or before it";
    }

    private static String quote(String id) {
        return "'" + id + "'";
    }

    /**
     * The event to learn: the impression's {@link #KEPT} fields ({@code ts} its event time) and
     * {@code label}, as JSON bytes.
     */
    static byte[] event(Item impression, String labelJson) {
        if (impression.plain) {  // its bytes with the label before the closing brace
            byte[] raw = impression.raw;
            int end = raw.length - 1;
            while (raw[end] != '}') {
                end--;
            }
            byte[] label = (",\"label\":" + labelJson + "}").getBytes(StandardCharsets.UTF_8);
            byte[] out = Arrays.copyOf(raw, end + label.length);
            System.arraycopy(label, 0, out, end, label.length);
            return out;
        }
        try {
            JsonNode given = JSON.readTree(impression.raw);
            ObjectNode out = JSON.createObjectNode();
            for (String name : KEPT) {
                if (given.has(name) && !"ts".equals(name)) {
                    out.set(name, given.get(name));
                }
            }
            out.put("ts", impression.ts);
            out.set("label", JSON.readTree(labelJson));
            return JSON.writeValueAsBytes(out);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /**
     * The records of one Kafka message: an event, or an envelope ({@code {"events": [...]}})
     * of them. A record the join cannot key or time is rejected through {@code out} (reasons
     * {@code not_json}, {@code id_missing}, {@code ts_missing}, {@code label_missing}).
     */
    public static List<Item> parse(byte[] value, boolean label, String topic, int partition,
            long offset, Out out) {
        Item fast = single(value, label, topic, partition, offset);
        if (fast != null) {
            return List.of(fast);
        }
        return parseTree(value, label, topic, partition, offset, out);
    }

    /**
     * A well-formed single-event message read by streaming through its tokens (no tree): the
     * common case, read at a fraction of the tree's cost. Null for anything else (an envelope,
     * a record to reject), which {@link #parseTree} reads and words the rejections of.
     */
    static Item single(byte[] value, boolean label, String topic, int partition, long offset) {
        String id = null;
        String labelJson = null;
        long ts = -1;
        long atMs = -1;
        boolean plain = true;
        try (JsonParser p = JSON.getFactory().createParser(value)) {
            if (p.nextToken() != JsonToken.START_OBJECT) {
                return null;
            }
            JsonToken t;
            while ((t = p.nextToken()) == JsonToken.FIELD_NAME) {
                String name = p.currentName();
                t = p.nextToken();
                switch (name) {
                    case "id":
                        if (t != JsonToken.VALUE_STRING && t != JsonToken.VALUE_NUMBER_INT) {
                            return null;
                        }
                        // as the tree reads it: an integer by its value (-0 is 0)
                        id = t == JsonToken.VALUE_STRING ? p.getText()
                                : p.getNumberValue().toString();
                        break;
                    case "ts":
                    case "at_ms":
                        if (t != JsonToken.VALUE_NUMBER_INT
                                || p.getNumberType() == JsonParser.NumberType.BIG_INTEGER
                                || p.getLongValue() < 0) {
                            return null;
                        }
                        if (name.equals("ts")) {
                            ts = p.getLongValue();
                        } else {
                            atMs = p.getLongValue();
                            plain = false;
                        }
                        break;
                    case "label":
                        plain = false;
                        labelJson = t == JsonToken.VALUE_STRING
                                ? JSON.writeValueAsString(p.getText())
                                : t.isScalarValue() ? p.getText() : JSON.readTree(p).toString();
                        break;
                    default:  // an envelope, fields a joined event keeps as they are, or others
                        if (name.equals("events")) {
                            return null;
                        }
                        if (!KEPT_AS_IS.contains(name)) {
                            plain = false;
                        }
                        p.skipChildren();
                }
            }
            if (t != JsonToken.END_OBJECT || p.nextToken() != null) {
                return null;
            }
        } catch (IOException e) {
            return null;
        }
        long time = ts >= 0 ? ts : label ? -1 : atMs;
        if (id == null || time < 0 || (label && labelJson == null)) {
            return null;
        }
        Item it = new Item(label, id, time, topic, partition, offset, -1, value);
        it.plain = !label && plain && ts >= 0;
        it.labelJson = label ? labelJson : "";
        return it;
    }

    /** {@link #parse} of any message, through a tree: envelopes, and the words of every
     * rejection. */
    static List<Item> parseTree(byte[] value, boolean label, String topic, int partition,
            long offset, Out out) {
        List<Item> items = new ArrayList<>();
        JsonNode root;
        try {
            root = JSON.readTree(value);
        } catch (IOException e) {
            root = null;
        }
        Item whole = new Item(label, "", 0, topic, partition, offset, -1, value);
        if (root == null || !root.isObject()) {
            out.reject(whole, "not_json", "message: expected a JSON object (an event or an "
                    + "envelope of events), got " + (root == null ? "bad JSON" : "a JSON "
                    + root.getNodeType().name().toLowerCase()));
            return items;
        }
        if (root.has("events") && root.get("events").isArray()) {
            int i = 0;
            for (JsonNode node : root.get("events")) {
                byte[] raw = node.toString().getBytes(StandardCharsets.UTF_8);
                Item it = item(node, label, topic, partition, offset, i++, raw, out);
                if (it != null) {
                    items.add(it);
                }
            }
        } else {
            Item it = item(root, label, topic, partition, offset, -1, value, out);
            if (it != null) {
                items.add(it);
            }
        }
        return items;
    }

    private static Item item(JsonNode node, boolean label, String topic, int partition,
            long offset, int index, byte[] raw, Out out) {
        Item bare = new Item(label, "", 0, topic, partition, offset, index, raw);
        JsonNode id = node.path("id");
        if (!(id.isTextual() || id.isIntegralNumber())) {
            out.reject(bare, "id_missing", "id: expected a string or an integer naming the "
                    + (label ? "impression the label is for" : "impression") + ", got "
                    + (id.isMissingNode() ? "none" : id.toString()));
            return null;
        }
        JsonNode ts = node.has("ts") ? node.get("ts") : label ? node.path("ts") : node.path("at_ms");
        if (!ts.isIntegralNumber() || !ts.canConvertToLong() || ts.asLong() < 0) {
            out.reject(bare, "ts_missing", "ts: expected event time in milliseconds (an integer "
                    + ">= 0" + (label ? "" : "; or the prediction log's at_ms") + "), got "
                    + (ts.isMissingNode() ? "none" : ts.toString()));
            return null;
        }
        if (label && !node.has("label")) {
            out.reject(bare, "label_missing", "label: expected the label of impression "
                    + id.asText() + ", got none");
            return null;
        }
        Item it = new Item(label, id.asText(), ts.asLong(), topic, partition, offset, index, raw);
        it.labelJson = label ? node.get("label").toString() : "";
        return it;
    }
}
