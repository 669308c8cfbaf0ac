package io.streamlearn.flink;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import org.junit.jupiter.api.Test;

/**
 * {@link BundleRotation}, the rule {@link DealBundles} deals by: each partition's bundles rotate
 * over the learners, whatever order the partitions come in.
 */
class DealBundlesTest {
    private static int[][] deal(int[] partitions, int learners, int rounds) {
        BundleRotation rotation = new BundleRotation();
        int[][] got = new int[partitions.length][learners];
        for (int r = 0; r < rounds; r++) {
            for (int i = 0; i < partitions.length; i++) {
                got[i][BundleRotation.learner(rotation.next(partitions[i]), learners)]++;
            }
        }
        return got;
    }

    @Test
    void aTimerThatEmitsTheSamePartitionsInTheSameOrderDoesNotAlias() {
        // a source subtask reading partitions 0 and 2, its timer emitting both each time, two
        // learners: one rotation over all bundles would send every bundle of 0 to one learner
        int[][] got = deal(new int[] {0, 2}, 2, 100);
        assertArrayEquals(new int[] {50, 50}, got[0]);
        assertArrayEquals(new int[] {50, 50}, got[1]);
    }

    @Test
    void everyPartitionIsSpreadOverEveryLearner() {
        for (int[] row : deal(new int[] {0, 1, 2, 3}, 4, 40)) {
            assertArrayEquals(new int[] {10, 10, 10, 10}, row);
        }
        for (int[] row : deal(new int[] {5, 9, 13}, 3, 30)) {  // one subtask's partitions
            assertArrayEquals(new int[] {10, 10, 10}, row);
        }
    }

    @Test
    void aPartitionStartsAtTheLearnerItsNumberNames() {
        BundleRotation rotation = new BundleRotation();
        assertEquals(1, BundleRotation.learner(rotation.next(3), 2));
        assertEquals(0, BundleRotation.learner(rotation.next(3), 2));
        assertEquals(2, BundleRotation.learner(rotation.next(5), 3));
    }
}
