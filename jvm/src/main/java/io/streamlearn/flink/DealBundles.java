package io.streamlearn.flink;

import org.apache.flink.api.common.functions.Partitioner;
import org.apache.flink.api.java.functions.KeySelector;
import org.apache.flink.types.Row;

/**
 * Deals the {@link EncodeBundler}'s bundles to the learners ({@code job.balance = "bundles"}):
 * each Kafka partition's next bundle to the learner dealt the fewest bytes of that partition so
 * far, so every partition is shared by every learner, in bytes, whatever sizes its bundles come
 * in ({@link BundleDeal}).
 *
 * <p>Why not Flink's {@code rebalance()}: one rotation over all of a source subtask's bundles
 * aliases with the order the encoder emits them in. Its timer emits every open bundle of its
 * partitions in the same order each time, so with two partitions per subtask and two learners
 * one learner would receive every bundle of the first partition and the other every bundle of
 * the second: a hot partition would set the pace again. Nor a rotation per partition: while a
 * backlog is read, a partition's bundles can alternate between a full one and the timer's
 * remainder, and with two learners one would learn every full one.
 *
 * <p>A bundle whose row names its learner ({@code learner >= 0}: the warm-up's, or under {@code
 * job.balance = "partitions"} with a warm-up the one of its source subtask, {@link WarmUp}) goes
 * to that learner.
 *
 * <p>Both halves of Flink's {@code partitionCustom}: the key of a bundle is its partition and
 * its size in bytes, or the learner it names ({@link BundleDeal#key}); the partitioner, which
 * knows the number of learners, deals it ({@link BundleDeal#learner}). One instance per sender
 * subtask, the only one that reads its partitions.
 */
public final class DealBundles implements KeySelector<Row, Long>, Partitioner<Long> {
    private static final long serialVersionUID = 1L;

    /** This sender subtask's bytes dealt, by partition and learner. */
    private transient BundleDeal deal;

    @Override
    public Long getKey(Row bundle) {
        byte[] bytes = (byte[]) bundle.getField(5);
        return BundleDeal.key(
                (Integer) bundle.getField(0), bytes.length, (Integer) bundle.getField(8));
    }

    @Override
    public int partition(Long key, int learners) {
        if (deal == null) {
            deal = new BundleDeal();
        }
        return deal.learner(key, learners);
    }
}
