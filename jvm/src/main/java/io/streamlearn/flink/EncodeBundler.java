package io.streamlearn.flink;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.apache.flink.api.common.operators.ProcessingTimeService.ProcessingTimeCallback;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonProcessingException;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.flink.api.common.typeinfo.BasicTypeInfo;
import org.apache.flink.api.common.typeinfo.PrimitiveArrayTypeInfo;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.java.typeutils.RowTypeInfo;
import org.apache.flink.streaming.api.operators.AbstractStreamOperator;
import org.apache.flink.streaming.api.operators.BoundedOneInput;
import org.apache.flink.streaming.api.operators.OneInputStreamOperator;
import org.apache.flink.streaming.api.watermark.Watermark;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;
import org.apache.flink.types.Row;
import org.apache.flink.util.OutputTag;

/**
 * Decodes, validates and hashes Kafka messages in the JVM and hands Python one micro-batch
 * (an {@link EncodedBatch}) per Kafka partition every {@code flushEvents} events or
 * {@code flushMs} milliseconds, whichever comes first.
 *
 * <p>Why: moving each Kafka record into Python and decoding its JSON there costs several
 * microseconds per event, which caps a PyFlink training job far below what its numpy
 * learners can do. Chained to the Kafka source, this operator turns thousands of records
 * into one Python element: Python only learns.
 *
 * <p>Input: {@link KafkaRecordWithOffsets} rows (partition, offset, timestamp, key, value,
 * join). Output: {@link #TYPE} rows (partition, first offset, end offset = last offset + 1,
 * messages, rejected events, batch bytes, join outcomes, after, learner, warmup, warmed). A
 * bundle covers consecutive offsets of one partition; bundles of a partition leave in offset
 * order. A bundle whose
 * messages were all rejected still leaves (with zero rows), so its offsets are accounted for.
 * {@code after} is the end offset of the partition's previous bundle from this operator (-1 for
 * its first since it started): bundles of a partition chain without a gap even where Kafka's
 * offsets have one (transaction markers, compaction), so whoever receives them out of order
 * (learners dealt bundles, {@code job.balance = "bundles"}) can put them back in order.
 *
 * <p>{@code learner} names the learner the bundle goes to when the job routes bundles (a
 * warm-up, or {@code job.balance = "bundles"}: {@link DealBundles}), -1 for "dealt";
 * {@code warmup} says whether it is one of the warm-up's ({@code job.warmup_events}: each
 * subtask's first share of events goes to learner 0, {@link WarmUp}); {@code warmed}, on a
 * bundle after the warm-up, names where this subtask's warm-up ended in each partition
 * ({@link WarmUp#warmed}), which a learner whose first bundle it is waits for the merged model
 * to reach.
 *
 * <p>When the job joins delayed labels ({@code join.impressions} set), the join writes the
 * training topic and names each record's outcome in its header ({@link JoinLogic#HEADER}):
 * the bundle counts them ({@code join outcomes}: JSON {@code {"joined": 812, ...}}, "" when
 * none) and learns nothing from a tally record (an empty value). Other jobs ignore the header.
 *
 * <p>Rejected events go to the side output {@code dlq} at once, each as its bounded dead-letter
 * record ({@link DeadLetter}, stage {@code train}: JSON text, the same bytes as Python's {@code
 * streamlearn.events.dead_letter} writes). Only rejected events cost this work.
 *
 * <p>Exactly-once: every buffer is emitted before a checkpoint barrier passes
 * ({@link #prepareSnapshotPreBarrier}) and when a bounded input ends, so the operator holds
 * no state of its own: what it read before a checkpoint is downstream by then, and what it
 * read after is read again from Kafka after a restore.
 */
public class EncodeBundler extends AbstractStreamOperator<Row>
        implements OneInputStreamOperator<Row, Row>, BoundedOneInput, ProcessingTimeCallback {
    private static final long serialVersionUID = 1L;

    public static final RowTypeInfo TYPE =
            new RowTypeInfo(
                    new TypeInformation<?>[] {
                        BasicTypeInfo.INT_TYPE_INFO,
                        BasicTypeInfo.LONG_TYPE_INFO,
                        BasicTypeInfo.LONG_TYPE_INFO,
                        BasicTypeInfo.INT_TYPE_INFO,
                        BasicTypeInfo.INT_TYPE_INFO,
                        PrimitiveArrayTypeInfo.BYTE_PRIMITIVE_ARRAY_TYPE_INFO,
                        BasicTypeInfo.STRING_TYPE_INFO,
                        BasicTypeInfo.LONG_TYPE_INFO,
                        BasicTypeInfo.INT_TYPE_INFO,
                        BasicTypeInfo.BOOLEAN_TYPE_INFO,
                        BasicTypeInfo.STRING_TYPE_INFO
                    },
                    new String[] {
                        "partition", "first_offset", "end_offset", "messages", "rejected", "batch",
                        "join", "after", "learner", "warmup", "warmed"
                    });

    /** The dead-letter side output: the tag Python's {@code OutputTag("dlq", Types.STRING())} makes. */
    public static final OutputTag<String> DLQ =
            new OutputTag<>("dlq", BasicTypeInfo.STRING_TYPE_INFO);

    /** The {@code stage} of this job's dead-letter records. */
    public static final String STAGE = "train";

    private final String topic;
    private final String task;
    private final int bits;
    private final String[] dense;
    private final String[][] crosses;
    private final int maxFeatures;
    private final int flushEvents;
    private final long flushMs;
    private final boolean join;
    private final long warmupEvents;
    private final boolean byPartition;

    private transient EventEncoder encoder;
    private transient WarmUp warmUp;
    private transient int own;
    private transient boolean restored;
    private transient Map<Integer, Buffer> buffers;
    private transient List<Rejection> rejected;
    private transient boolean timerSet;

    /** One partition's open bundle. */
    private static final class Buffer {
        final int partition;
        final EncodedBatch batch;
        long firstOffset = -1;
        long endOffset = -1;
        /** The end offset of this partition's previous bundle, -1 before the first. */
        long after = -1;
        int messages;
        int rejected;
        /** Join outcomes in this bundle, by name (insertion order), or null while none. */
        Map<String, Integer> outcomes;

        Buffer(int partition, String task) {
            this.partition = partition;
            this.batch = new EncodedBatch(task);
        }
    }

    /**
     * The operator of a training job, from its configuration as {@code
     * streamlearn.training.config.TrainConfig.to_dict()} writes it in JSON (the same text the
     * job's Python operators read): {@code kafka.topic}, {@code model.task}, {@code
     * features.bits}, {@code features.dense}, {@code features.crosses}, {@code
     * job.flush_events}, {@code job.flush_ms}, {@code job.balance} and {@code
     * job.warmup_events} (the job's: 0 once the model has learned it). The configuration was
     * validated in Python; a key that is missing or of the wrong kind here is a bug, named in
     * the exception.
     *
     * @throws IllegalArgumentException naming the key that is missing or wrong
     */
    public EncodeBundler(String configJson) {
        JsonNode cfg;
        try {
            cfg = new ObjectMapper().readTree(configJson);
        } catch (JsonProcessingException e) {
            throw new IllegalArgumentException("configJson: expected a JSON object, got " + e);
        }
        this.topic = text(cfg, "kafka", "topic");
        this.task = text(cfg, "model", "task");
        this.bits = (int) number(cfg, "features", "bits");
        this.dense = strings(node(cfg, "features", "dense"), "features.dense");
        JsonNode pairs = node(cfg, "features", "crosses");
        this.crosses = new String[pairs.size()][];
        for (int i = 0; i < crosses.length; i++) {
            crosses[i] = strings(pairs.get(i), "features.crosses");
        }
        this.maxFeatures = ContractRules.MAX_FEATURES;
        this.flushEvents = (int) number(cfg, "job", "flush_events");
        this.flushMs = number(cfg, "job", "flush_ms");
        this.warmupEvents = number(cfg, "job", "warmup_events");
        this.byPartition = "partitions".equals(text(cfg, "job", "balance"));
        JsonNode impressions = cfg.path("join").path("impressions");
        this.join = impressions.isTextual() && !impressions.asText().isEmpty();
    }

    private static JsonNode node(JsonNode cfg, String section, String key) {
        JsonNode n = cfg.path(section).path(key);
        if (n.isMissingNode() || n.isNull()) {
            throw new IllegalArgumentException(section + "." + key + ": expected a value, got none");
        }
        return n;
    }

    private static String text(JsonNode cfg, String section, String key) {
        JsonNode n = node(cfg, section, key);
        if (!n.isTextual()) {
            throw new IllegalArgumentException(section + "." + key + ": expected a string, got " + n);
        }
        return n.asText();
    }

    private static long number(JsonNode cfg, String section, String key) {
        JsonNode n = node(cfg, section, key);
        if (!n.canConvertToLong()) {
            throw new IllegalArgumentException(
                    section + "." + key + ": expected an integer, got " + n);
        }
        return n.asLong();
    }

    private static String[] strings(JsonNode list, String field) {
        if (!list.isArray()) {
            throw new IllegalArgumentException(field + ": expected a list of strings, got " + list);
        }
        String[] out = new String[list.size()];
        for (int i = 0; i < out.length; i++) {
            if (!list.get(i).isTextual()) {
                throw new IllegalArgumentException(
                        field + ": expected a list of strings, got " + list);
            }
            out[i] = list.get(i).asText();
        }
        return out;
    }

    @Override
    public void initializeState(
            org.apache.flink.runtime.state.StateInitializationContext context) throws Exception {
        super.initializeState(context);
        restored = context.isRestored();
    }

    @Override
    public void open() throws Exception {
        super.open();
        org.apache.flink.api.common.TaskInfo info = getRuntimeContext().getTaskInfo();
        own = byPartition ? info.getIndexOfThisSubtask() : -1;
        warmUp = new WarmUp(warmupEvents, info.getNumberOfParallelSubtasks(), restored);
        encoder = new EventEncoder(task, bits, dense, crosses, maxFeatures, 1 << 20);
        buffers = new HashMap<>();
        rejected = new ArrayList<>();
        timerSet = false;
    }

    @Override
    public void processElement(StreamRecord<Row> element) throws Exception {
        Row row = element.getValue();
        int partition = (Integer) row.getField(0);
        long offset = (Long) row.getField(1);
        byte[] value = (byte[]) row.getField(4);
        Buffer buf = buffers.get(partition);
        if (buf == null) {
            buf = new Buffer(partition, task);
            buffers.put(partition, buf);
        }
        if (buf.messages == 0) {
            buf.firstOffset = offset;
        }
        String outcome = join ? (String) row.getField(5) : null;
        if (outcome != null && JoinLogic.OUTCOMES.contains(outcome)) {
            if (buf.outcomes == null) {
                buf.outcomes = new java.util.LinkedHashMap<>();
            }
            buf.outcomes.merge(outcome, 1, Integer::sum);
            if (value.length == 0) {  // a tally: counted, nothing to learn
                value = null;
            }
        }
        rejected.clear();
        if (value != null) {
            encoder.add(value, buf.batch, rejected);
        }
        if (!rejected.isEmpty()) {
            long now = getProcessingTimeService().getCurrentProcessingTime();
            for (Rejection r : rejected) {
                output.collect(DLQ, new StreamRecord<>(new String(
                        r.toDeadLetter(STAGE, topic, partition, offset, now),
                        java.nio.charset.StandardCharsets.UTF_8)));
            }
            buf.rejected += rejected.size();
        }
        buf.messages++;
        buf.endOffset = offset + 1;
        if (buf.batch.rows() >= flushEvents) {
            emit(buf);
        } else if (!timerSet) {
            timerSet = true;
            long now = getProcessingTimeService().getCurrentProcessingTime();
            getProcessingTimeService().registerTimer(now + flushMs, this);
        }
    }

    @Override
    public void onProcessingTime(long time) throws Exception {
        timerSet = false;
        emitAll();
    }

    @Override
    public void prepareSnapshotPreBarrier(long checkpointId) throws Exception {
        super.prepareSnapshotPreBarrier(checkpointId);
        emitAll();
    }

    @Override
    public void endInput() throws Exception {
        emitAll();
    }

    /**
     * Bundles leave before any watermark passes: a bounded source ends with the final
     * watermark before {@link #endInput}, and downstream operators finish their work on it
     * (the merger publishes its last version), so the last bundles must be ahead of it.
     */
    @Override
    public void processWatermark(Watermark mark) throws Exception {
        emitAll();
        super.processWatermark(mark);
    }

    private void emitAll() {
        for (Buffer buf : buffers.values()) {
            if (buf.messages > 0) {
                emit(buf);
            }
        }
    }

    /** {@code {"joined": 812, "late": 3}}, or "" for none. */
    static String outcomes(Map<String, Integer> counts) {
        if (counts == null) {
            return "";
        }
        StringBuilder out = new StringBuilder("{");
        for (Map.Entry<String, Integer> e : counts.entrySet()) {
            if (out.length() > 1) {
                out.append(',');
            }
            out.append('"').append(e.getKey()).append("\":").append(e.getValue());
        }
        return out.append('}').toString();
    }

    private void emit(Buffer buf) {
        boolean warm = warmUp.next(buf.partition, buf.endOffset, buf.batch.rows());
        output.collect(
                new StreamRecord<>(
                        Row.of(
                                buf.partition,
                                buf.firstOffset,
                                buf.endOffset,
                                buf.messages,
                                buf.rejected,
                                buf.batch.toBytes(),
                                outcomes(buf.outcomes),
                                buf.after,
                                WarmUp.learner(warm, own),
                                warm,
                                warm ? "" : warmUp.warmed())));
        buf.after = buf.endOffset;
        buf.outcomes = null;
        buf.batch.reset();
        buf.messages = 0;
        buf.rejected = 0;
        buf.firstOffset = -1;
    }
}
