package io.streamlearn.flink;

import java.util.HashMap;
import java.util.Map;

/**
 * The rule {@link DealBundles} deals bundles by, free of Flink (so the tests run it without
 * Flink's runtime): each Kafka partition's next bundle goes to the learner that has been dealt
 * the fewest bytes of that partition so far, a tie to the first in turn from the learner the
 * partition's number names. Bundles of one size go round: the j-th bundle of partition p to
 * learner (p + j) mod P. Bundles whose sizes alternate (a full one cut at {@code
 * job.flush_events}, then the remainder the timer flushes, as while a backlog is read) are
 * still shared by bytes, where a turn by count would send every full one to one learner.
 * A bundle the encoder names a learner for (the warm-up's, {@link WarmUp}) goes to that learner.
 *
 * <pre>{@code
 * BundleDeal deal = new BundleDeal();
 * deal.next(1, 500, 2);  // 1: partition 1 starts at learner 1
 * deal.next(1, 20, 2);   // 0
 * deal.next(1, 500, 2);  // 0: it has 20 bytes of partition 1, learner 1 has 500
 * }</pre>
 */
public final class BundleDeal {
    /** Bytes dealt so far, by Kafka partition, by learner. */
    private final Map<Integer, long[]> dealt = new HashMap<>();

    /** The learner, among {@code learners}, that {@code partition}'s next bundle goes to. */
    public int next(int partition, long bytes, int learners) {
        long[] sums = dealt.get(partition);
        if (sums == null || sums.length != learners) {
            sums = new long[learners];
            dealt.put(partition, sums);
        }
        int start = Math.floorMod(partition, learners);
        int best = start;
        for (int i = 1; i < learners; i++) {
            int learner = (start + i) % learners;
            if (sums[learner] < sums[best]) {
                best = learner;
            }
        }
        sums[best] += bytes;
        return best;
    }

    /**
     * The key {@link DealBundles} gives a bundle of {@code bytes} from {@code partition} whose
     * learner the encoder named ({@code named >= 0}: the warm-up's, or the one chained to its
     * source subtask, {@link WarmUp#learner}) or not (-1: dealt by {@link #next}).
     */
    public static long key(int partition, long bytes, int named) {
        if (named >= 0) {
            return ~(long) named;  // negative: the learner named
        }
        return ((long) partition << 32) | Math.min(bytes, 0xFFFFFFFFL);
    }

    /** The learner, among {@code learners}, for a bundle's {@link #key}. */
    public int learner(long key, int learners) {
        if (key < 0) {
            return (int) Math.floorMod(~key, (long) learners);
        }
        return next((int) (key >>> 32), key & 0xFFFFFFFFL, learners);
    }
}
