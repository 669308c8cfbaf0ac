package io.streamlearn.flink;

import java.util.HashMap;
import java.util.Map;

/**
 * The rule {@link DealBundles} deals bundles by, free of Flink (so the tests run it without
 * Flink's runtime): each Kafka partition's bundles go to the learners in turn, on a rotation of
 * its own that starts at the learner the partition's number names, so the j-th bundle of
 * partition p goes to learner (p + j) mod P; a bundle the encoder names a learner for (the
 * warm-up's, {@link WarmUp}) goes to that learner.
 */
public final class BundleRotation {
    /** Bundles dealt so far, by Kafka partition. */
    private final Map<Integer, Long> dealt = new HashMap<>();

    /** The key of {@code partition}'s next bundle: the partition plus its bundles before it. */
    public long next(int partition) {
        long before = dealt.getOrDefault(partition, 0L);
        dealt.put(partition, before + 1);
        return partition + before;
    }

    /**
     * The key of {@code partition}'s next bundle when the encoder named its learner: that
     * learner ({@code learner >= 0}: the warm-up's, or the one chained to its source subtask,
     * {@link WarmUp#learner}), else the partition's next in turn ({@link #next}).
     */
    public long key(int partition, int learner) {
        return learner >= 0 ? learner : next(partition);
    }

    /** The learner, among {@code learners}, that a key from {@link #next} or {@link #key} names. */
    public static int learner(long key, int learners) {
        return (int) Math.floorMod(key, (long) learners);
    }
}
