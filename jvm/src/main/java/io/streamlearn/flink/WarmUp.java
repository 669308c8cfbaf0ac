package io.streamlearn.flink;

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
 */
public final class WarmUp {
    /** The learner that learns the warm-up. */
    public static final int LEARNER = 0;

    private final long share;
    private long sent;

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

    /** Whether the next bundle, of {@code rows} events, belongs to the warm-up; counts it. */
    public boolean next(int rows) {
        if (sent >= share) {
            return false;
        }
        sent += rows;
        return true;
    }

    /**
     * The learner a bundle goes to: {@link #LEARNER} for one of the warm-up, else {@code own}
     * (the learner chained to this subtask, {@code job.balance = "partitions"}), or -1 when the
     * bundles are dealt in turn ({@code "bundles"}: {@link BundleRotation}).
     */
    public static int learner(boolean warm, int own) {
        return warm ? LEARNER : own;
    }
}
