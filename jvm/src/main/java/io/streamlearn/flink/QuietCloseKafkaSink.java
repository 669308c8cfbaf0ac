package io.streamlearn.flink;

import java.io.IOException;
import java.util.Collection;
import java.util.List;
import org.apache.flink.api.common.eventtime.Watermark;
import org.apache.flink.api.connector.sink2.Committer;
import org.apache.flink.api.connector.sink2.CommitterInitContext;
import org.apache.flink.api.connector.sink2.WriterInitContext;
import org.apache.flink.connector.kafka.sink.KafkaCommittable;
import org.apache.flink.connector.kafka.sink.KafkaSink;
import org.apache.flink.connector.kafka.sink.KafkaWriterState;
import org.apache.flink.connector.kafka.sink.TwoPhaseCommittingStatefulSink;
import org.apache.flink.core.io.SimpleVersionedSerializer;
import org.apache.flink.streaming.api.connector.sink2.CommittableMessage;
import org.apache.flink.streaming.api.connector.sink2.SupportsPostCommitTopology;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.lineage.LineageVertex;
import org.apache.flink.streaming.api.lineage.LineageVertexProvider;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A {@link KafkaSink} whose writer, closed by a task that is failing, logs what closing raises
 * instead of raising it: the jobs' Kafka sinks ({@code connectors.flink_kafka.kafka_sink}).
 *
 * <p>Why: the connector's writer keeps the first failed send of a burst and fails the task with
 * it; a send failing after that one was raised (a second batch the broker refused, say) is kept
 * again, and the writer's {@code close()} raises it. Flink closes the operators of a failing task
 * in its exception handler, where anything raised is "FATAL - exception in exception handler":
 * the TaskManager stops, and the job, left without a slot, waits for one instead of restarting.
 *
 * <p>Why that is safe: nothing a checkpoint counts is at stake. A checkpoint and the end of the
 * input flush the writer and raise any failed send ({@code flush}); what was written after the
 * last one is written again when the job restarts from it. Once the input ended and its flush
 * returned, nothing failed unseen, and {@code close()} raises what it raises as before: a task
 * finishing normally fails on it, without stopping the TaskManager. Before that, {@code close()}
 * is reached only by a task that fails, is cancelled, or stops without draining.
 *
 * <p>Everything else is the Kafka sink's own: its writer state, committables, committer and
 * post-commit topology, so a job's checkpoints and savepoints are the same with or without it.
 */
public final class QuietCloseKafkaSink<IN>
        implements TwoPhaseCommittingStatefulSink<IN, KafkaWriterState, KafkaCommittable>,
                SupportsPostCommitTopology<KafkaCommittable>,
                LineageVertexProvider {
    private static final long serialVersionUID = 1L;

    private final KafkaSink<IN> sink;

    public QuietCloseKafkaSink(KafkaSink<IN> sink) {
        this.sink = sink;
    }

    private TwoPhaseCommittingStatefulSink<IN, KafkaWriterState, KafkaCommittable> delegate() {
        return sink;
    }

    @Override
    public PrecommittingStatefulSinkWriter<IN, KafkaWriterState, KafkaCommittable> createWriter(
            WriterInitContext context) throws IOException {
        return new Writer<>(delegate().createWriter(context));
    }

    @Override
    public PrecommittingStatefulSinkWriter<IN, KafkaWriterState, KafkaCommittable> restoreWriter(
            WriterInitContext context, Collection<KafkaWriterState> states) throws IOException {
        return new Writer<>(delegate().restoreWriter(context, states));
    }

    @Override
    public SimpleVersionedSerializer<KafkaWriterState> getWriterStateSerializer() {
        return sink.getWriterStateSerializer();
    }

    @Override
    public Committer<KafkaCommittable> createCommitter(CommitterInitContext context)
            throws IOException {
        return sink.createCommitter(context);
    }

    @Override
    public SimpleVersionedSerializer<KafkaCommittable> getCommittableSerializer() {
        return sink.getCommittableSerializer();
    }

    @Override
    public void addPostCommitTopology(
            DataStream<CommittableMessage<KafkaCommittable>> committables) {
        sink.addPostCommitTopology(committables);
    }

    @Override
    public LineageVertex getLineageVertex() {
        return sink.getLineageVertex();
    }

    /** The connector's writer, but for what {@link #close()} raises before the input ended. */
    public static final class Writer<IN>
            implements PrecommittingStatefulSinkWriter<IN, KafkaWriterState, KafkaCommittable> {
        private static final Logger LOG = LoggerFactory.getLogger(QuietCloseKafkaSink.class);

        private final PrecommittingStatefulSinkWriter<IN, KafkaWriterState, KafkaCommittable>
                writer;
        /** The input ended and its flush returned: every send is resolved, none failed. */
        private boolean ended;

        public Writer(
                PrecommittingStatefulSinkWriter<IN, KafkaWriterState, KafkaCommittable> writer) {
            this.writer = writer;
        }

        @Override
        public void write(IN element, Context context) throws IOException, InterruptedException {
            writer.write(element, context);
        }

        @Override
        public void flush(boolean endOfInput) throws IOException, InterruptedException {
            writer.flush(endOfInput);
            ended |= endOfInput;
        }

        @Override
        public void writeWatermark(Watermark watermark) throws IOException, InterruptedException {
            writer.writeWatermark(watermark);
        }

        @Override
        public List<KafkaWriterState> snapshotState(long checkpointId) throws IOException {
            return writer.snapshotState(checkpointId);
        }

        @Override
        public Collection<KafkaCommittable> prepareCommit()
                throws IOException, InterruptedException {
            return writer.prepareCommit();
        }

        @Override
        public void close() throws Exception {
            try {
                writer.close();
            } catch (Exception e) {
                if (ended) {
                    throw e;
                }
                if (e instanceof InterruptedException) {
                    Thread.currentThread().interrupt();
                }
                LOG.warn("Closing the Kafka writer of a task that did not end its input (it fails, "
                        + "is cancelled or stops): logged, not raised, as what it wrote since its "
                        + "last checkpoint is written again from there", e);
            }
        }
    }
}
