package io.streamlearn.flink;

import java.util.Map;
import java.util.TreeMap;

/**
 * The warm-up's rule ({@code job.warmup_events}), free of Flink (so the tests run it without
 * Flink's runtime): each encoder subtask sends its first share of the warm-up's events, whole
 * bundles, to learner 0, which thus learns the stream's first events alone and in order; every
 * other learner starts from the model that made (a factorization machine's factors, started
 * apart in P learners, otherwise learn worse than one learner's: docs/merge.md).
 *
 * <p>The share of a subtask is the warm-up's events divided by the subtasks, rounded up; a
 * bundle belongs to the warm-up while the subtask has sent fewer events than its share before
 * it, so the last one may take the warm-up past its share by less than a bundle. A subtask
 * restored from a checkpoint warms nothing up: its learners hold a model already.
 *
 * <p>A learner whose first bundle comes after the warm-up waits until the merged model reflects
 * the warm-up of that bundle's subtask ({@link #warmed}): every partition's warm-up bundles, not
 * only its own partition's (a subtask may have sent its share from one partition before another
 * sent any). It waits for learner 0 alone, which never waits, so learners cannot hold each
 * other up.
 */
public final class WarmUp {
    /** The learner that learns the warm-up. */
    public static final int LEARNER = 0;

    private final long share;
    private long sent;
    /** Kafka partition -> the end offset of its last warm-up bundle. */
    private final Map<Integer, Long> ends = new TreeMap<>();
    /** {@link #warmed}, built once the warm-up is over (nothing changes it after). */
    private String warmed;

    /**
     * @param events the warm-up's events over all subtasks ({@code job.warmup_events}; 0: none)
     * @param subtasks the encoder's subtasks
     * @param restored whether this subtask was restored from a checkpoint
     */
    public WarmUp(long events, int subtasks, boolean restored) {
        if (subtasks < 1) {
            throw new IllegalArgumentException("subtasks: expected at least 1, got " + subtasks);
        }
        this.share = restored || events <= 0 ? 0 : (events + subtasks - 1) / subtasks;
    }

    /** This subtask's share of the warm-up's events. */
    public long share() {
        return share;
    }

    /**
     * Whether the next bundle, of {@code rows} events of {@code partition} up to offset {@code
     * end} (exclusive), belongs to the warm-up; counts it.
     */
    public boolean next(int partition, long end, int rows) {
        if (sent >= share) {
            return false;
        }
        sent += rows;
        ends.put(partition, end);
        return true;
    }

    /**
     * What a bundle after the warm-up carries: {@code "p:end,..."}, the end offset of each
     * partition's last warm-up bundle, in partition order ({@code ""}: no warm-up); the merged
     * model reflects this subtask's warm-up once its offsets reach them.
     */
    public String warmed() {
        if (warmed == null) {
            StringBuilder out = new StringBuilder();
            for (Map.Entry<Integer, Long> e : ends.entrySet()) {
                if (out.length() > 0) {
                    out.append(',');
                }
                out.append(e.getKey()).append(':').append(e.getValue());
            }
            warmed = out.toString();
        }
        return warmed;
    }

    /**
     * The learner a bundle goes to: {@link #LEARNER} for one of the warm-up, else {@code own}
     * (the learner chained to this subtask, {@code job.balance = "partitions"}), or -1 when the
     * bundles are dealt ({@code "bundles"}: {@link BundleDeal}).
     */
    public static int learner(boolean warm, int own) {
        return warm ? LEARNER : own;
    }
}
