package io.streamlearn.flink;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.stream.Stream;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestFactory;

/**
 * The join's corpus ({@code streamlearn/joining_corpus.jsonl}, generated from Python's
 * {@code streamlearn.joining.join}, the reference) replayed through {@link JoinLogic} in event
 * time, as the job runs it: records in their arrival order, one {@link JoinLogic.Slot} per id,
 * the watermark Flink's bounded disorder gives (the largest time seen minus {@code disorder_ms}
 * minus 1) firing each id's timers in time order, and the end of input firing the rest. The
 * events learned (id, label, how), the ids dropped and the records rejected (label or not, id,
 * time, reason) must be the reference's.
 *
 * <p>The file comes from the system property {@code streamlearn.joinCorpus} (set by the pom).
 */
class JoinCorpusTest {
    private static final ObjectMapper JSON = new ObjectMapper();

    static List<JsonNode> cases() throws IOException {
        String file = System.getProperty("streamlearn.joinCorpus");
        if (file == null) {
            fail("system property streamlearn.joinCorpus: expected the corpus file, got nothing");
        }
        List<JsonNode> out = new ArrayList<>();
        for (String line : Files.readAllLines(Path.of(file), StandardCharsets.UTF_8)) {
            if (!line.isBlank()) {
                out.add(JSON.readTree(line));
            }
        }
        return out;
    }

    @TestFactory
    Stream<DynamicTest> corpus() throws IOException {
        return cases().stream().map(c -> DynamicTest.dynamicTest(
                c.get("name").asText(), () -> replay(c)));
    }

    @Test
    void theCorpusHasEveryOutcome() throws IOException {
        TreeSet<String> seen = new TreeSet<>();
        for (JsonNode c : cases()) {
            c.get("learned").forEach(row -> seen.add(row.get(2).asText()));
            c.get("rejected").forEach(row -> seen.add(row.get(3).asText()));
            if (c.get("dropped").size() > 0) {
                seen.add(JoinLogic.DROPPED);
            }
        }
        assertEquals(new TreeSet<>(List.of(JoinLogic.JOINED, JoinLogic.EXPIRED,
                JoinLogic.DROPPED, JoinLogic.DUPLICATE, JoinLogic.LATE, JoinLogic.UNMATCHED,
                JoinLogic.IMPRESSION_DUPLICATE)), seen);
    }

    @Test
    void aSlotSurvivesItsBytes() {
        JoinLogic.Slot s = new JoinLogic.Slot();
        Recorder out = new Recorder();
        JoinLogic.Settings cfg = new JoinLogic.Settings(100, 50, "0", false);
        byte[] imp = "{\"id\":\"a\",\"ts\":5,\"features\":{\"x\":1}}".getBytes(StandardCharsets.UTF_8);
        byte[] lab = "{\"id\":\"a\",\"label\":1,\"ts\":9}".getBytes(StandardCharsets.UTF_8);
        s = JoinLogic.onRecord(s, JoinLogic.Item.of(false, "a", 5, "imp", 1, 7, -1, imp, "+"),
                cfg, out);
        s = JoinLogic.onRecord(s, JoinLogic.Item.of(true, "a", 9, "lab", 0, 3, 2, lab, "1"),
                cfg, out);
        JoinLogic.Slot back = JoinLogic.Slot.fromBytes(s.toBytes());
        assertEquals(java.util.Arrays.toString(s.toBytes()), java.util.Arrays.toString(back.toBytes()));
        JoinLogic.onTimer(back, 9, cfg, out);
        assertEquals(List.of("a|1|joined"), out.learned);
        assertTrue(new String(out.events.get(0), StandardCharsets.UTF_8).contains("\"label\":1"));
    }

    /** The streaming read of a single event and the tree read agree wherever the streaming
     * one answers: the same id, time and label, and the same joined event. */
    @Test
    void theStreamingReadAgreesWithTheTree() throws IOException {
        String[][] cases = {
            {"false", "{\"id\":\"a\",\"ts\":5,\"features\":{\"x\":1,\"s\":[\"u\"]},\"key\":\"k\"}"},
            {"false", "{\"id\":7,\"at_ms\":9,\"features\":{\"x\":1},\"model\":\"m\",\"version\":3,\"prediction\":0.2}"},
            {"false", "{\"id\":-0,\"ts\":5,\"features\":{}}"},
            {"false", "{\"id\":\"w\",\"ts\":5,\"features\":{\"x\":1},\"weight\":2.5}"},
            {"false", "{\"id\":\"v\",\"at_ms\":5,\"features\":{},\"weight\":0,\"model\":\"m\"}"},
            {"false", "{\"id\":\"a\",\"ts\":5,\"at_ms\":\"soon\",\"features\":{}}"},
            {"false", "{\"id\":123456789012345678901234567890,\"ts\":5,\"features\":{}}"},
            {"false", "{\"features\":{\"x\":1},\"ts\":5,\"label\":0,\"id\":\"b\"}  "},
            {"false", "{\"id\":\"a\",\"ts\":5,\"ts\":-1,\"features\":{}}"},
            {"false", "{\"id\":\"a\",\"ts\":99999999999999999999,\"features\":{}}"},
            {"false", "{\"events\":[{\"id\":\"a\",\"ts\":5,\"features\":{}}]}"},
            {"false", "{\"id\":true,\"ts\":5}"},
            {"true", "{\"id\":\"a\",\"label\":\"buy \\\"now\\\"\",\"ts\":5}"},
            {"true", "{\"id\":\"a\",\"label\":{\"y\":[1,2]},\"ts\":5}"},
            {"true", "{\"id\":\"a\",\"label\":1.50,\"ts\":5}"},
            {"true", "{\"id\":\"a\",\"ts\":5}"},
            {"true", "{\"id\":\"a\",\"label\":1,\"at_ms\":5}"},
            {"true", "[1]"},
            {"true", "{\"id\":\"a\",\"label\":1,\"ts\":5"},
        };
        int fastOnes = 0;
        for (String[] c : cases) {
            boolean label = Boolean.parseBoolean(c[0]);
            byte[] raw = c[1].getBytes(StandardCharsets.UTF_8);
            JoinLogic.Item fast = JoinLogic.single(raw, label, "t", 0, 0);
            Recorder rejected = new Recorder();
            List<JoinLogic.Item> tree = JoinLogic.parseTree(raw, label, "t", 0, 0, rejected);
            if (fast == null) {
                continue;
            }
            fastOnes++;
            assertEquals(1, tree.size(), c[1]);
            JoinLogic.Item slow = tree.get(0);
            assertEquals(slow.id, fast.id, c[1]);
            assertEquals(slow.ts, fast.ts, c[1]);
            assertEquals(JSON.readTree(slow.labelJson.isEmpty() ? "null" : slow.labelJson),
                    JSON.readTree(fast.labelJson.isEmpty() ? "null" : fast.labelJson), c[1]);
            if (!label) {
                assertEquals(JSON.readTree(JoinLogic.event(slow, "1")),
                        JSON.readTree(JoinLogic.event(fast, "1")), c[1]);
            }
        }
        assertEquals(10, fastOnes, "the cases the streaming read takes");
        // an impression's weight is the joined event's, whichever way it was read
        for (int i = 3; i <= 4; i++) {
            byte[] raw = cases[i][1].getBytes(StandardCharsets.UTF_8);
            JoinLogic.Item it = JoinLogic.single(raw, false, "t", 0, 0);
            assertEquals(i == 3, it.plain, cases[i][1]);
            JsonNode joined = JSON.readTree(JoinLogic.event(it, "1"));
            assertEquals(i == 3 ? 2.5 : 0.0, joined.get("weight").asDouble(), cases[i][1]);
            assertEquals(1, joined.get("label").asInt(), cases[i][1]);
        }
    }

    /** What the rules told, and the timers asked for per id. */
    static final class Recorder implements JoinLogic.Out {
        final List<String> learned = new ArrayList<>();
        final List<byte[]> events = new ArrayList<>();
        final List<String> dropped = new ArrayList<>();
        final List<String> rejected = new ArrayList<>();
        final List<Long> timers = new ArrayList<>();

        @Override
        public void learn(JoinLogic.Item impression, byte[] event, String how) {
            try {
                JsonNode e = JSON.readTree(event);
                learned.add(e.get("id").asText() + "|" + e.get("label").toString() + "|" + how);
                events.add(event);
            } catch (IOException x) {
                throw new IllegalStateException(x);
            }
        }

        @Override
        public void dropped(JoinLogic.Item impression) {
            dropped.add(impression.id);
        }

        @Override
        public void reject(JoinLogic.Item it, String reason, String text) {
            assertTrue(text.contains(it.id), "the reason names the id: " + text);
            rejected.add(it.label + "|" + it.id + "|" + it.ts + "|" + reason);
        }

        @Override
        public void timer(long at) {
            timers.add(at);
        }
    }

    static void replay(JsonNode c) throws IOException {
        JsonNode s = c.get("settings");
        JsonNode dflt = s.get("default");
        JoinLogic.Settings cfg = new JoinLogic.Settings(s.get("window_ms").asLong(),
                s.get("remember_ms").asLong(), dflt.isNull() ? null : dflt.toString(),
                "last".equals(s.get("keep").asText()));
        long disorder = s.get("disorder_ms").asLong();
        Map<String, JoinLogic.Slot> slots = new HashMap<>();
        // the timers Flink would hold: time -> ids (one timer per id and time)
        TreeMap<Long, TreeSet<String>> timers = new TreeMap<>();
        Recorder out = new Recorder();
        long high = Long.MIN_VALUE;
        long offset = 0;
        for (JsonNode r : c.get("records")) {
            boolean label = r.get("label").asBoolean();
            byte[] raw = JSON.writeValueAsBytes(r.get("record"));
            List<JoinLogic.Item> items = JoinLogic.parse(raw, label, "t", 0, offset++, out);
            assertEquals(1, items.size(), "parsed: " + r);
            JoinLogic.Item it = items.get(0);
            out.timers.clear();
            JoinLogic.Slot slot = JoinLogic.onRecord(slots.get(it.id), it, cfg, out);
            slots.put(it.id, slot);
            for (long at : out.timers) {
                timers.computeIfAbsent(at, k -> new TreeSet<>()).add(it.id);
            }
            high = Math.max(high, it.ts);
            fire(slots, timers, high - disorder - 1, cfg, out);
        }
        fire(slots, timers, Long.MAX_VALUE, cfg, out);
        assertTrue(slots.isEmpty(), "every id forgotten at the end: " + slots.keySet());

        List<String> learned = new ArrayList<>();
        c.get("learned").forEach(row -> learned.add(
                row.get(0).asText() + "|" + row.get(1).toString() + "|" + row.get(2).asText()));
        List<String> rejected = new ArrayList<>();
        c.get("rejected").forEach(row -> rejected.add(row.get(0).asBoolean() + "|"
                + row.get(1).asText() + "|" + row.get(2).asLong() + "|" + row.get(3).asText()));
        List<String> dropped = new ArrayList<>();
        c.get("dropped").forEach(id -> dropped.add(id.asText()));
        assertEquals(sorted(learned), sorted(out.learned), "learned");
        assertEquals(sorted(dropped), sorted(out.dropped), "dropped");
        assertEquals(sorted(rejected), sorted(out.rejected), "rejected");
    }

    /** Fire, in time order, every timer at or before the watermark {@code wm}. */
    private static void fire(Map<String, JoinLogic.Slot> slots,
            TreeMap<Long, TreeSet<String>> timers, long wm, JoinLogic.Settings cfg,
            Recorder out) {
        while (!timers.isEmpty() && timers.firstKey() <= wm) {
            Map.Entry<Long, TreeSet<String>> due = timers.pollFirstEntry();
            for (String id : due.getValue()) {
                JoinLogic.Slot slot = slots.get(id);
                if (slot == null) {
                    continue;  // Flink's state is cleared; its timers find nothing
                }
                out.timers.clear();
                JoinLogic.Slot kept = JoinLogic.onTimer(slot, due.getKey(), cfg, out);
                if (kept == null) {
                    slots.remove(id);
                } else {
                    slots.put(id, kept);
                }
                for (long at : out.timers) {
                    timers.computeIfAbsent(at, k -> new TreeSet<>()).add(id);
                }
            }
        }
    }

    private static List<String> sorted(List<String> rows) {
        List<String> out = new ArrayList<>(rows);
        out.sort(null);
        return out;
    }
}
