package io.streamlearn.flink;

import org.apache.flink.api.common.functions.Partitioner;
import org.apache.flink.api.java.functions.KeySelector;
import org.apache.flink.types.Row;

/**
 * Deals the {@link EncodeBundler}'s bundles to the learners ({@code job.balance = "bundles"}):
 * each Kafka partition's bundles in turn, on a rotation of its own that starts at the learner
 * its number names, so the j-th bundle of partition p goes to learner (p + j) mod P.
 *
 * <p>Why not Flink's {@code rebalance()}: one rotation over all of a source subtask's bundles
 * aliases with the order the encoder emits them in. Its timer emits every open bundle of its
 * partitions in the same order each time, so with two partitions per subtask and two learners
 * one learner would receive every bundle of the first partition and the other every bundle of
 * the second: a hot partition would set the pace again. A rotation per partition spreads each
 * partition over every learner whatever the others do.
 *
 * <p>A bundle whose row names its learner ({@code learner >= 0}: the warm-up's, or under {@code
 * job.balance = "partitions"} with a warm-up the one of its source subtask, {@link WarmUp}) goes
 * to that learner.
 *
 * <p>Both halves of Flink's {@code partitionCustom}, by the rule of {@link BundleRotation}: the
 * key of a bundle is its partition's count of bundles so far plus the partition (one count per
 * sender subtask, the only one that reads that partition), the learner that key modulo the
 * learners.
 */
public final class DealBundles implements KeySelector<Row, Long>, Partitioner<Long> {
    private static final long serialVersionUID = 1L;

    /** This sender subtask's rotation (the only one that reads its partitions). */
    private transient BundleRotation rotation;

    @Override
    public Long getKey(Row bundle) {
        if (rotation == null) {
            rotation = new BundleRotation();
        }
        return rotation.key((Integer) bundle.getField(0), (Integer) bundle.getField(8));
    }

    @Override
    public int partition(Long key, int learners) {
        return BundleRotation.learner(key, learners);
    }
}
