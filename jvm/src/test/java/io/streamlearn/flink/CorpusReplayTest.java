package io.streamlearn.flink;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Base64;
import java.util.List;
import java.util.Set;
import java.util.TreeSet;
import java.util.stream.Stream;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;
import org.junit.jupiter.api.DynamicContainer;
import org.junit.jupiter.api.DynamicNode;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestFactory;

/**
 * The event contract's conformance corpus, replayed through the JVM encoder: one test per case,
 * named by the case.
 *
 * <p>The corpus ({@code streamlearn/contract/corpus/*.jsonl}, generated from the contract's
 * reference by {@code python -m streamlearn.contract.corpus --write}) holds messages with the
 * settings they are decoded under, and what the contract makes of them: the valid events'
 * entries {@code [slot, value, numeric]} and labels, and the rejections as index, field and
 * code (and the contract's text, {@code reason}). Each case is encoded three times: by {@link
 * EventEncoder#add} (the fast scanner, handing over to the complete path at its first doubt),
 * by the same encoder again (with the names, values and schema guess the first time cached),
 * and by {@link TreeDecoder} alone (the complete path). Each must give exactly what the corpus
 * says: the same rows in the same order with the same slots, values (bit for bit), numeric
 * flags and labels, read back from the batch's wire bytes, and the same rejections in the same
 * order with the same index, field, code and text (the parser's own words inside {@code bad JSON
 * (...)} excepted).
 *
 * <p>What the JVM does not see, by design: the files of {@link #NOT_FOR_THE_JVM} (events given
 * as Python objects), and cases whose settings are not the training job's, the only decoder the
 * JVM has ({@link #trainingSettings}: labels required, no cap on an envelope's events); those
 * belong to the scoring job and the serving API.
 *
 * <p>The directory comes from the system property {@code streamlearn.corpus} (set by the pom).
 */
class CorpusReplayTest {
    /** Corpus files of cases only Python objects can bring (a NaN, an integer name). */
    static final Set<String> NOT_FOR_THE_JVM = Set.of("objects.jsonl");

    private static final ObjectMapper JSON = new ObjectMapper();

    static Path corpusDir() {
        String dir = System.getProperty("streamlearn.corpus");
        if (dir == null) {
            fail("system property streamlearn.corpus: expected the corpus directory, got nothing");
        }
        return Path.of(dir);
    }

    static List<Path> corpusFiles() throws IOException {
        try (Stream<Path> files = Files.list(corpusDir())) {
            return files.filter(p -> p.getFileName().toString().endsWith(".jsonl"))
                    .filter(p -> !NOT_FOR_THE_JVM.contains(p.getFileName().toString()))
                    .sorted()
                    .toList();
        }
    }

    static List<JsonNode> cases(Path file) throws IOException {
        List<JsonNode> out = new ArrayList<>();
        for (String line : Files.readAllLines(file, StandardCharsets.UTF_8)) {
            if (!line.isBlank()) {
                out.add(JSON.readTree(line));
            }
        }
        return out;
    }

    /** Settings the training job's encoder is made for. */
    static boolean trainingSettings(JsonNode settings) {
        return settings.get("labels").asText().equals("required")
                && settings.path("max_events").isNull();
    }

    @TestFactory
    Stream<DynamicNode> corpus() throws IOException {
        List<DynamicNode> files = new ArrayList<>();
        for (Path file : corpusFiles()) {
            List<DynamicNode> tests = new ArrayList<>();
            for (JsonNode c : cases(file)) {
                if (trainingSettings(c.get("settings"))) {
                    tests.add(DynamicTest.dynamicTest(c.get("case").asText(), () -> replay(c)));
                }
            }
            files.add(DynamicContainer.dynamicContainer(file.getFileName().toString(), tests));
        }
        return files.stream();
    }

    /** The replay replays something: the corpus is there, and each code has its case. */
    @Test
    void corpusCoversEveryCodeTheJvmCanGive() throws IOException {
        List<Path> files = corpusFiles();
        assertFalse(files.isEmpty(), "no corpus file in " + corpusDir());
        Set<String> covered = new TreeSet<>();
        int replayed = 0;
        for (Path file : files) {
            for (JsonNode c : cases(file)) {
                if (trainingSettings(c.get("settings"))) {
                    replayed++;
                    c.get("rejections").forEach(r -> covered.add(r.get("code").asText()));
                }
            }
        }
        assertTrue(replayed >= 50, "expected the corpus's training cases, got " + replayed);
        // what a training decoder of JSON bytes cannot give: a cap on events is serving's, and
        // JSON has neither NaN nor names that are not strings
        Set<String> expected = new TreeSet<>(Rules.RULES.keySet());
        expected.removeAll(Set.of(
                "events.too_many", "features.not_finite", "features.name_not_string"));
        assertEquals(expected, covered, "codes of the contract without a training case");
    }

    // -- one case ------------------------------------------------------------------------------

    static void replay(JsonNode c) throws IOException {
        JsonNode s = c.get("settings");
        String task = s.get("task").asText();
        int bits = s.get("bits").asInt();
        String[] dense = new String[s.get("dense").size()];
        for (int i = 0; i < dense.length; i++) {
            dense[i] = s.get("dense").get(i).asText();
        }
        String[][] crosses = new String[s.get("crosses").size()][];
        for (int i = 0; i < crosses.length; i++) {
            JsonNode pair = s.get("crosses").get(i);
            crosses[i] = new String[] {pair.get(0).asText(), pair.get(1).asText()};
        }
        int maxFeatures = s.get("max_features").asInt();
        byte[] message = c.get("message").isNull()
                ? Base64.getDecoder().decode(c.get("message_b64").asText())
                : c.get("message").asText().getBytes(StandardCharsets.UTF_8);

        EventEncoder encoder = new EventEncoder(task, bits, dense, crosses, maxFeatures, 1 << 20);
        EncodedBatch batch = new EncodedBatch(task);
        List<Rejection> rejected = new ArrayList<>();
        int valid = encoder.add(message, batch, rejected);
        String name = c.get("case").asText();
        check(name + ", encoder", c, task, valid, batch, rejected);
        // again, with the names, values and the schema guess of the first time cached
        batch.reset();
        rejected.clear();
        valid = encoder.add(message, batch, rejected);
        check(name + ", encoder again", c, task, valid, batch, rejected);

        Crosses treeCrosses = crosses.length == 0 ? null : new Crosses(crosses, bits);
        TreeDecoder tree = new TreeDecoder(EventEncoder.taskCode(task), maxFeatures,
                new SlotCache(bits, dense, 1 << 10, treeCrosses), treeCrosses);
        EncodedBatch treeBatch = new EncodedBatch(task);
        List<Rejection> treeRejected = new ArrayList<>();
        int treeValid = tree.add(message, treeBatch, treeRejected);
        check(name + ", complete path", c, task, treeValid, treeBatch, treeRejected);
    }

    private static void check(String path, JsonNode c, String task, int valid, EncodedBatch batch,
            List<Rejection> rejected) throws IOException {
        JsonNode events = c.get("events");
        assertEquals(expectedRejections(c), gotRejections(rejected), path + ": rejections");
        assertEquals(events.size(), valid, path + ": valid events");
        Decoded got = Decoded.read(batch.toBytes());
        assertEquals(events.size(), got.rows.size(), path + ": rows in the batch");
        for (int i = 0; i < events.size(); i++) {
            JsonNode event = events.get(i);
            String at = path + ": event " + i + " (index " + event.get("index") + ")";
            assertEquals(expectedRows(event.get("rows")), got.rows.get(i), at + ": entries");
            assertEquals(label(task, event.get("label")), got.labels.get(i), at + ": label");
            assertEquals(bits(Double.parseDouble(event.get("weight").asText())),
                    bits(got.weights.get(i)), at + ": weight");
        }
        // a rejection's text is the contract's; only the parser's detail is its own
        for (int i = 0; i < rejected.size(); i++) {
            String want = c.get("rejections").get(i).get("reason").asText();
            String have = rejected.get(i).reason();
            if (rejected.get(i).code().equals("message.not_json")) {
                String head = want.substring(0, want.indexOf("bad JSON (") + "bad JSON (".length());
                assertTrue(have.startsWith(head) && have.endsWith(")"),
                        path + ": reason " + have + " does not read " + head + "...)");
            } else {
                assertEquals(want, have, path + ": reason");
            }
        }
    }

    private static List<String> expectedRejections(JsonNode c) {
        List<String> out = new ArrayList<>();
        for (JsonNode r : c.get("rejections")) {
            out.add(rejection(r.get("index").isNull() ? null : r.get("index").asInt(),
                    r.get("field").asText(), r.get("code").asText()));
        }
        return out;
    }

    private static List<String> gotRejections(List<Rejection> rejected) {
        List<String> out = new ArrayList<>();
        for (Rejection r : rejected) {
            out.add(rejection(r.index(), r.field(), r.code()));
        }
        return out;
    }

    private static String rejection(Integer index, String field, String code) {
        return "index " + index + ", field " + field + ", code " + code;
    }

    /** Entries as text: slot, the value's exact bits (and the value), numeric. */
    private static List<String> expectedRows(JsonNode rows) {
        List<String> out = new ArrayList<>();
        for (JsonNode r : rows) {
            out.add(entry(r.get(0).asInt(), Double.parseDouble(r.get(1).asText()),
                    r.get(2).asBoolean()));
        }
        return out;
    }

    static String entry(int slot, double value, boolean numeric) {
        return "[" + slot + ", " + value + " (0x" + Long.toHexString(Double.doubleToRawLongBits(value))
                + "), " + (numeric ? "numeric" : "not numeric") + "]";
    }

    /** A double's exact bits, with the double (so that -0.0 is not 0.0). */
    private static String bits(double x) {
        return x + " (0x" + Long.toHexString(Double.doubleToRawLongBits(x)) + ")";
    }

    /** A label as the batch holds it: binary and regression a double, multiclass JSON text. */
    private static String label(String task, JsonNode label) throws IOException {
        if (task.equals("multiclass")) {
            return JSON.writeValueAsString(label);
        }
        return Double.toString(Double.parseDouble(label.asText()));
    }

    /** A batch read back from its wire bytes (EncodedBatch's layout), as the tests compare it. */
    record Decoded(List<List<String>> rows, List<String> labels, List<Double> weights) {
        static Decoded read(byte[] bytes) throws IOException {
            ByteBuffer b = ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN);
            byte[] magic = new byte[4];
            b.get(magic);
            assertEquals("SLE1", new String(magic, StandardCharsets.US_ASCII), "batch magic");
            int rows = b.getInt();
            int nnz = b.getInt();
            int kind = b.getInt();
            int labelKind = kind & EncodedBatch.JSON_LABELS;
            double[] values = new double[nnz];
            b.asDoubleBuffer().get(values);
            b.position(b.position() + 8 * nnz);
            List<String> labels = new ArrayList<>();
            if (labelKind == 0) {
                for (int i = 0; i < rows; i++) {
                    labels.add(Double.toString(b.getDouble()));
                }
            }
            List<Double> weights = new ArrayList<>();
            for (int i = 0; i < rows; i++) { // none in the batch: every row weighs 1
                weights.add((kind & EncodedBatch.WEIGHTS) != 0 ? b.getDouble() : 1.0);
            }
            int[] offsets = new int[rows + 1];
            b.asIntBuffer().get(offsets);
            b.position(b.position() + 4 * (rows + 1));
            int[] indices = new int[nnz];
            b.asIntBuffer().get(indices);
            b.position(b.position() + 4 * nnz);
            byte[] numeric = new byte[nnz];
            b.get(numeric);
            if (labelKind == 1) {
                byte[] json = new byte[b.remaining()];
                b.get(json);
                for (JsonNode l : JSON.readTree(json)) {
                    labels.add(JSON.writeValueAsString(l));
                }
            }
            assertEquals(rows, labels.size(), "labels in the batch");
            List<List<String>> out = new ArrayList<>();
            for (int r = 0; r < rows; r++) {
                List<String> entries = new ArrayList<>();
                for (int k = offsets[r]; k < offsets[r + 1]; k++) {
                    entries.add(entry(indices[k], values[k], numeric[k] == 1));
                }
                out.add(entries);
            }
            return new Decoded(out, labels, weights);
        }
    }
}
