package io.streamlearn.flink;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.apache.flink.api.common.eventtime.Watermark;
import org.apache.flink.api.common.eventtime.WatermarkGenerator;
import org.apache.flink.api.common.eventtime.WatermarkOutput;
import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.common.typeinfo.BasicTypeInfo;
import org.apache.flink.api.common.typeinfo.PrimitiveArrayTypeInfo;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.connector.source.Source;
import org.apache.flink.api.common.typeutils.SimpleTypeSerializerSnapshot;
import org.apache.flink.api.common.typeutils.TypeSerializerSnapshot;
import org.apache.flink.api.common.typeutils.base.TypeSerializerSingleton;
import org.apache.flink.api.java.typeutils.RowTypeInfo;
import org.apache.flink.core.memory.DataInputView;
import org.apache.flink.core.memory.DataOutputView;
import org.apache.flink.connector.kafka.sink.KafkaRecordSerializationSchema;
import org.apache.flink.connector.kafka.source.reader.deserializer.KafkaRecordDeserializationSchema;
import org.apache.flink.kafka.shaded.org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.flink.kafka.shaded.org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.flink.kafka.shaded.org.apache.kafka.common.header.Header;
import org.apache.flink.kafka.shaded.org.apache.kafka.common.header.internals.RecordHeader;
import org.apache.flink.metrics.Counter;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.datastream.SingleOutputStreamOperator;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.KeyedProcessFunction;
import org.apache.flink.types.Row;
import org.apache.flink.util.Collector;
import org.apache.flink.util.OutputTag;

/**
 * The training job's delayed-label join: impressions and labels from two Kafka topics, keyed by
 * id, joined in event time by {@link JoinLogic}'s rules, with the window state in Flink state
 * (checkpointed with both topics' offsets; the RocksDB backend for windows larger than memory).
 *
 * <p>{@link #build} wires: each topic's source (its records parsed in the deserializer, event
 * time from {@code ts}, a watermark of {@code join.disorder_ms} bounded disorder per Kafka
 * partition, idle partitions skipped after {@code join.idle_ms}) → union → key by id →
 * {@link Joiner} (a record the join cannot key or time goes to the dead letters from there).
 * It returns the records for the training topic ({@link #OUT}: each outcome, and for a learned
 * one its event, JSON: the impression's event with its label; written by {@link Output} with
 * the outcome in the header {@link JoinLogic#HEADER}) and the dead-letter records (stage
 * {@code join}). Python writes the first to the training topic with Kafka transactions, so the
 * learners read each joined event and each outcome once, committed with the checkpoint that
 * covers the join's state, and count the outcomes into the version lineage.
 *
 * <p>Flink metrics, group {@code join}: a counter per outcome ({@code joined}, {@code expired},
 * {@code dropped}, {@code duplicate}, {@code late}, {@code unmatched},
 * {@code impression_duplicate}, {@code bad}).
 */
public final class Join {
    /** An item: (label, id, ts, topic, partition, offset, index, raw, reason, text). */
    public static final RowTypeInfo ITEM =
            new RowTypeInfo(
                    new TypeInformation<?>[] {
                        BasicTypeInfo.BOOLEAN_TYPE_INFO,
                        BasicTypeInfo.STRING_TYPE_INFO,
                        BasicTypeInfo.LONG_TYPE_INFO,
                        BasicTypeInfo.STRING_TYPE_INFO,
                        BasicTypeInfo.INT_TYPE_INFO,
                        BasicTypeInfo.LONG_TYPE_INFO,
                        BasicTypeInfo.INT_TYPE_INFO,
                        PrimitiveArrayTypeInfo.BYTE_PRIMITIVE_ARRAY_TYPE_INFO,
                        BasicTypeInfo.STRING_TYPE_INFO,
                        BasicTypeInfo.STRING_TYPE_INFO
                    },
                    new String[] {
                        "label", "id", "ts", "topic", "partition", "offset", "index", "raw",
                        "reason", "text"
                    });

    /** A record for the training topic: (outcome, event), the event null for an outcome
     * that is not learned (a tally). */
    public static final RowTypeInfo OUT =
            new RowTypeInfo(
                    new TypeInformation<?>[] {
                        BasicTypeInfo.STRING_TYPE_INFO,
                        PrimitiveArrayTypeInfo.BYTE_PRIMITIVE_ARRAY_TYPE_INFO
                    },
                    new String[] {"outcome", "event"});

    /** The dead-letter side output of the join's operators. */
    public static final OutputTag<String> DLQ =
            new OutputTag<>("join-dlq", BasicTypeInfo.STRING_TYPE_INFO);

    /** The {@code stage} of the join's dead-letter records. */
    public static final String STAGE = "join";

    private final JsonNode join;

    /** The join of the job configured by {@code configJson} (Python's {@code TrainConfig.to_dict()}
     * as JSON; its {@code join} section). */
    public Join(String configJson) throws IOException {
        this.join = new ObjectMapper().readTree(configJson).get("join");
    }

    /** The deserializer of the impressions' ({@code label} false) or the labels' source. */
    public Records records(boolean label) {
        return new Records(label);
    }

    /**
     * The join's graph on {@code env}.
     *
     * @param impressions the impressions topic's source (deserializer {@code records(false)})
     * @param labels the labels topic's source ({@code records(true)})
     * @return the records for the training topic ({@link #OUT}), and the dead-letter records
     */
    public List<DataStream<?>> build(StreamExecutionEnvironment env,
            Source<Row, ?, ?> impressions, Source<Row, ?, ?> labels) {
        JoinLogic.Settings settings = JoinLogic.Settings.of(join);
        long disorder = join.get("disorder_ms").asLong();
        WatermarkStrategy<Row> time =
                WatermarkStrategy.<Row>forGenerator(context -> new Disorder(disorder))
                        .withTimestampAssigner((row, kafkaTs) -> (Long) row.getField(2))
                        .withIdleness(Duration.ofMillis(join.get("idle_ms").asLong()));
        DataStream<Row> a = env.fromSource(impressions, time, "join-impressions", ITEM)
                .uid("join-impressions");
        DataStream<Row> b = env.fromSource(labels, time, "join-labels", ITEM).uid("join-labels");
        // a record the join cannot key has the id "" and goes to the dead letters from there
        SingleOutputStreamOperator<Row> joined =
                a.union(b).keyBy(row -> (String) row.getField(1), BasicTypeInfo.STRING_TYPE_INFO)
                        .process(new Joiner(settings), OUT)
                        .name("join").uid("join");
        return List.of(joined, joined.getSideOutput(DLQ));
    }

    /**
     * Flink's bounded-disorder watermark (the largest time seen, minus {@code disorder}, minus
     * 1), over the records the join keys: a record it cannot parse carries its Kafka time,
     * which must not move event time.
     */
    static final class Disorder implements WatermarkGenerator<Row> {
        private final long disorder;
        private long max;

        Disorder(long disorder) {
            this.disorder = disorder;
            this.max = Long.MIN_VALUE + disorder + 1;
        }

        @Override
        public void onEvent(Row row, long ts, WatermarkOutput out) {
            if (row.getField(8) == null) {
                max = Math.max(max, ts);
            }
        }

        @Override
        public void onPeriodicEmit(WatermarkOutput out) {
            out.emitWatermark(new Watermark(max - disorder - 1));
        }
    }

    /** The dead-letter record of an item the join does not learn. */
    static String deadLetter(Row row, String reason, String text) {
        return deadLetter((String) row.getField(3), (Integer) row.getField(4),
                (Long) row.getField(5), (Integer) row.getField(6), (byte[]) row.getField(7),
                (Boolean) row.getField(0), reason, text);
    }

    static String deadLetter(String topic, int partition, long offset, int index, byte[] raw,
            boolean label, String reason, String text) {
        String field = FIELDS.getOrDefault(reason, label ? "label" : "id");
        byte[] rec = DeadLetter.record(STAGE, topic, partition, offset,
                index < 0 ? null : index, "join." + reason, field, text, raw,
                System.currentTimeMillis());
        return new String(rec, StandardCharsets.UTF_8);
    }

    private static final Map<String, String> FIELDS = Map.of(
            "not_json", "message", "id_missing", "id", "ts_missing", "ts",
            "label_missing", "label", JoinLogic.IMPRESSION_DUPLICATE, "id");

    /** An item as a row; a good item carries its {@link JoinLogic.Item#extra} where a bad one
     * has its text. */
    static Row row(JoinLogic.Item it, String reason, String text) {
        return Row.of(it.label, it.id, it.ts, it.topic, it.partition, it.offset, it.index,
                it.raw(), reason, reason == null ? it.extra() : text);
    }

    static JoinLogic.Item item(Row row) {
        return JoinLogic.Item.of((Boolean) row.getField(0), (String) row.getField(1),
                (Long) row.getField(2), (String) row.getField(3), (Integer) row.getField(4),
                (Long) row.getField(5), (Integer) row.getField(6), (byte[]) row.getField(7),
                (String) row.getField(9));
    }

    /** A Kafka record → its items ({@link JoinLogic#parse}); what cannot be parsed, as a row
     * with its reason (its time: the record's Kafka timestamp, left out of event time). */
    public static final class Records implements KafkaRecordDeserializationSchema<Row> {
        private static final long serialVersionUID = 1L;
        private final boolean label;

        public Records(boolean label) {
            this.label = label;
        }

        @Override
        public void deserialize(ConsumerRecord<byte[], byte[]> record, Collector<Row> out) {
            byte[] value = record.value() == null ? new byte[0] : record.value();
            long kafkaTs = Math.max(0, record.timestamp());
            JoinLogic.Out bad = new JoinLogic.Out() {
                @Override
                public void learn(JoinLogic.Item impression, byte[] event, String how) {}

                @Override
                public void dropped(JoinLogic.Item impression) {}

                @Override
                public void reject(JoinLogic.Item it, String reason, String text) {
                    out.collect(Row.of(it.label, "", kafkaTs, it.topic, it.partition, it.offset,
                            it.index, it.raw(), reason, text));
                }

                @Override
                public void timer(long at) {}
            };
            for (JoinLogic.Item it : JoinLogic.parse(value, label, record.topic(),
                    record.partition(), record.offset(), bad)) {
                out.collect(row(it, null, null));
            }
        }

        @Override
        public TypeInformation<Row> getProducedType() {
            return ITEM;
        }
    }

    /**
     * A {@link JoinLogic.Slot} in Flink state, by its own bytes ({@link JoinLogic.Slot#write}).
     * On the heap backend a slot is kept as the object (read and written per record without
     * bytes; copied only while a checkpoint holds it); on RocksDB every access is these bytes.
     */
    public static final class SlotSerializer extends TypeSerializerSingleton<JoinLogic.Slot> {
        private static final long serialVersionUID = 1L;
        public static final SlotSerializer INSTANCE = new SlotSerializer();

        @Override
        public boolean isImmutableType() {
            return false;
        }

        @Override
        public JoinLogic.Slot createInstance() {
            return new JoinLogic.Slot();
        }

        @Override
        public JoinLogic.Slot copy(JoinLogic.Slot from) {
            return JoinLogic.Slot.fromBytes(from.toBytes());
        }

        @Override
        public JoinLogic.Slot copy(JoinLogic.Slot from, JoinLogic.Slot reuse) {
            return copy(from);
        }

        @Override
        public int getLength() {
            return -1;
        }

        @Override
        public void serialize(JoinLogic.Slot record, DataOutputView target) throws IOException {
            record.write(target);
        }

        @Override
        public JoinLogic.Slot deserialize(DataInputView source) throws IOException {
            return JoinLogic.Slot.read(source);
        }

        @Override
        public JoinLogic.Slot deserialize(JoinLogic.Slot reuse, DataInputView source)
                throws IOException {
            return deserialize(source);
        }

        @Override
        public void copy(DataInputView source, DataOutputView target) throws IOException {
            serialize(deserialize(source), target);
        }

        @Override
        public TypeSerializerSnapshot<JoinLogic.Slot> snapshotConfiguration() {
            return new Snapshot();
        }

        /** The serializer's snapshot in a checkpoint: this class, no parameters. */
        public static final class Snapshot extends SimpleTypeSerializerSnapshot<JoinLogic.Slot> {
            public Snapshot() {
                super(() -> INSTANCE);
            }
        }
    }

    /** The serializer of {@link #OUT} records to {@code topic}: the event (empty for a tally)
     * with its outcome in the header {@link JoinLogic#HEADER}, at the record's event time. */
    public Output output(String topic) {
        return new Output(topic);
    }

    /** See {@link #output}. */
    public static final class Output implements KafkaRecordSerializationSchema<Row> {
        private static final long serialVersionUID = 1L;
        private static final byte[] EMPTY = new byte[0];
        private final String topic;
        private transient Map<String, List<Header>> headers;

        Output(String topic) {
            this.topic = topic;
        }

        @Override
        public ProducerRecord<byte[], byte[]> serialize(Row row, KafkaSinkContext context,
                Long timestamp) {
            if (headers == null) {
                headers = new HashMap<>();
                for (String outcome : JoinLogic.OUTCOMES) {
                    headers.put(outcome, List.of(new RecordHeader(JoinLogic.HEADER,
                            outcome.getBytes(StandardCharsets.UTF_8))));
                }
            }
            byte[] event = (byte[]) row.getField(1);
            return new ProducerRecord<>(topic, null,
                    timestamp == null || timestamp < 0 ? null : timestamp, null,
                    event == null ? EMPTY : event, headers.get((String) row.getField(0)));
        }
    }

    /** {@link JoinLogic} per id, its {@link JoinLogic.Slot} in Flink state. */
    static final class Joiner extends KeyedProcessFunction<String, Row, Row> {
        private static final long serialVersionUID = 1L;
        private final JoinLogic.Settings settings;
        private transient ValueState<JoinLogic.Slot> slot;
        private transient Map<String, Counter> counts;

        Joiner(JoinLogic.Settings settings) {
            this.settings = settings;
        }

        @Override
        public void open(OpenContext context) {
            slot = getRuntimeContext().getState(
                    new ValueStateDescriptor<>("slot", SlotSerializer.INSTANCE));
            counts = new HashMap<>();
            for (String outcome : JoinLogic.OUTCOMES) {
                counts.put(outcome,
                        getRuntimeContext().getMetricGroup().addGroup("join").counter(outcome));
            }
        }

        /** Count {@code outcome} and tell the learners: a tally record, or the event. */
        private void tell(String outcome, byte[] event, Collector<Row> out) {
            counts.get(outcome).inc();
            out.collect(Row.of(outcome, event));
        }

        @Override
        public void processElement(Row row, Context ctx, Collector<Row> out)
                throws IOException {
            String reason = (String) row.getField(8);
            if (reason != null) {  // not keyed nor timed: a dead letter at once
                tell(JoinLogic.BAD, null, out);
                ctx.output(DLQ, deadLetter(row, reason, (String) row.getField(9)));
                return;
            }
            save(JoinLogic.onRecord(slot.value(), item(row), settings, outcomes(ctx, out)));
        }

        @Override
        public void onTimer(long at, OnTimerContext ctx, Collector<Row> out)
                throws IOException {
            JoinLogic.Slot held = slot.value();
            if (held != null) {
                save(JoinLogic.onTimer(held, at, settings, outcomes(ctx, out)));
            }
        }

        private void save(JoinLogic.Slot s) throws IOException {
            if (s == null) {
                slot.clear();
            } else {
                slot.update(s);
            }
        }

        private JoinLogic.Out outcomes(Context ctx, Collector<Row> out) {
            return new JoinLogic.Out() {
                @Override
                public void learn(JoinLogic.Item impression, byte[] event, String how) {
                    tell(how, event, out);
                }

                @Override
                public void dropped(JoinLogic.Item impression) {
                    tell(JoinLogic.DROPPED, null, out);
                }

                @Override
                public void reject(JoinLogic.Item it, String reason, String text) {
                    tell(reason, null, out);
                    ctx.output(DLQ, deadLetter(it.topic, it.partition, it.offset, it.index,
                            it.raw(), it.label, reason, text));
                }

                @Override
                public void timer(long at) {
                    ctx.timerService().registerEventTimeTimer(at);
                }
            };
        }
    }
}
