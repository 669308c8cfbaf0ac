package io.streamlearn.flink;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

/**
 * {@link BundleDeal}, the rule {@link DealBundles} deals by: each partition's bundles are
 * shared by the learners in bytes, whatever order the partitions come in and whatever sizes
 * their bundles have.
 */
class DealBundlesTest {
    /** Bundles dealt to each learner, by partition: {@code rounds} of one bundle of
     * {@code sizes[r % sizes.length]} bytes from each partition in turn. */
    private static long[][] deal(int[] partitions, int learners, int rounds, long... sizes) {
        BundleDeal deal = new BundleDeal();
        long[][] got = new long[partitions.length][learners];
        for (int r = 0; r < rounds; r++) {
            for (int i = 0; i < partitions.length; i++) {
                long bytes = sizes[r % sizes.length];
                got[i][deal.learner(BundleDeal.key(partitions[i], bytes, -1), learners)] += bytes;
            }
        }
        return got;
    }

    @Test
    void aTimerThatEmitsTheSamePartitionsInTheSameOrderDoesNotAlias() {
        // a source subtask reading partitions 0 and 2, its timer emitting both each time, two
        // learners: one rotation over all bundles would send every bundle of 0 to one learner
        long[][] got = deal(new int[] {0, 2}, 2, 100, 1);
        assertArrayEquals(new long[] {50, 50}, got[0]);
        assertArrayEquals(new long[] {50, 50}, got[1]);
    }

    @Test
    void everyPartitionIsSpreadOverEveryLearner() {
        for (long[] row : deal(new int[] {0, 1, 2, 3}, 4, 40, 1)) {
            assertArrayEquals(new long[] {10, 10, 10, 10}, row);
        }
        for (long[] row : deal(new int[] {5, 9, 13}, 3, 30, 1)) {  // one subtask's partitions
            assertArrayEquals(new long[] {10, 10, 10}, row);
        }
    }

    @Test
    void bundlesOfAlternatingSizesAreSharedByBytes() {
        // a backlog read: a full bundle, then the timer's remainder, over and over; in turn by
        // count, one of two learners would get every full bundle (100 x 5,000 bytes)
        long[][] got = deal(new int[] {3}, 2, 200, 5_000, 40);
        assertArrayEquals(new long[] {252_000, 252_000}, got[0]);
        long[][] three = deal(new int[] {1}, 3, 300, 5_000, 40, 40);
        long most = Math.max(three[0][0], Math.max(three[0][1], three[0][2]));
        long least = Math.min(three[0][0], Math.min(three[0][1], three[0][2]));
        assertEquals(100 * 5_000 + 200 * 40, three[0][0] + three[0][1] + three[0][2]);
        assertTrue(most - least <= 5_000, most + " against " + least);
    }

    @Test
    void bundlesOfOneSizeGoRoundFromTheLearnerThePartitionNames() {
        BundleDeal deal = new BundleDeal();
        int[] got = new int[5];
        for (int j = 0; j < got.length; j++) {
            got[j] = deal.learner(BundleDeal.key(3, 800, -1), 2);
        }
        assertArrayEquals(new int[] {1, 0, 1, 0, 1}, got);
        assertEquals(2, deal.learner(BundleDeal.key(5, 800, -1), 3));
        assertEquals(0, deal.learner(BundleDeal.key(5, 800, -1), 3));
    }

    @Test
    void theSmallerShareGetsTheNextBundle() {
        BundleDeal deal = new BundleDeal();
        assertEquals(1, deal.learner(BundleDeal.key(1, 500, -1), 2));
        assertEquals(0, deal.learner(BundleDeal.key(1, 20, -1), 2));
        assertEquals(0, deal.learner(BundleDeal.key(1, 500, -1), 2));  // 20 bytes against 500
        assertEquals(1, deal.learner(BundleDeal.key(1, 20, -1), 2));  // 520 against 500
    }
}
