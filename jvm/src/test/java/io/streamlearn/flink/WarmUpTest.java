package io.streamlearn.flink;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

/**
 * {@link WarmUp}, the rule the encoder routes the warm-up's bundles by, and how {@link
 * BundleDeal} deals a bundle whose learner the encoder named.
 */
class WarmUpTest {
    @Test
    void eachSubtaskSendsItsShareRoundedUpInWholeBundles() {
        WarmUp warm = new WarmUp(10_000, 3, false);
        assertEquals(3334, warm.share());
        // bundles of 1,500 events: 0, 1,500 and 3,000 sent before them are under the share
        assertTrue(warm.next(4, 1500, 1500));
        assertTrue(warm.next(4, 3000, 1500));
        assertTrue(warm.next(4, 4500, 1500));
        assertFalse(warm.next(2, 1500, 1500));
        assertFalse(warm.next(4, 4500, 0));
    }

    @Test
    void aBundleOfRejectedEventsDoesNotEndTheWarmUp() {
        WarmUp warm = new WarmUp(100, 1, false);
        assertTrue(warm.next(0, 10, 0));
        assertTrue(warm.next(0, 110, 99));
        assertTrue(warm.next(0, 111, 1));
        assertFalse(warm.next(0, 112, 1));
    }

    @Test
    void noWarmUpWhenRestoredOrNoneAsked() {
        WarmUp restored = new WarmUp(10_000, 2, true);
        assertFalse(restored.next(0, 1, 1));
        assertEquals("", restored.warmed());
        assertFalse(new WarmUp(0, 2, false).next(0, 1, 1));
        assertThrows(IllegalArgumentException.class, () -> new WarmUp(10, 0, false));
    }

    @Test
    void aBundleAfterTheWarmUpNamesWhereItEndedInEveryPartition() {
        // the share came from partition 3 before partition 1 sent a warm-up bundle: a learner
        // whose first bundle is partition 1's waits for partition 3's warm-up too
        WarmUp warm = new WarmUp(4000, 2, false);
        assertTrue(warm.next(3, 900, 1000));
        assertTrue(warm.next(3, 1400, 500));
        assertTrue(warm.next(1, 500, 500));
        assertFalse(warm.next(1, 1500, 1000));
        assertEquals("1:500,3:1400", warm.warmed());
        assertFalse(warm.next(3, 2400, 1000));
        assertEquals("1:500,3:1400", warm.warmed());
    }

    @Test
    void theWarmUpGoesToLearnerZeroAndTheRestAsTheBalanceSays() {
        assertEquals(0, WarmUp.learner(true, 3));
        assertEquals(3, WarmUp.learner(false, 3));
        assertEquals(-1, WarmUp.learner(false, -1));
    }

    @Test
    void aNamedLearnerIsKeptAndTheOthersAreDealt() {
        BundleDeal deal = new BundleDeal();
        int[] got = new int[6];
        int[] named = {0, 0, -1, -1, -1, 2};
        for (int i = 0; i < named.length; i++) {
            got[i] = deal.learner(BundleDeal.key(1, 1_000, named[i]), 3);
        }
        // partition 1's deal starts at learner 1 with its first bundle not named; the named
        // ones count for nobody's share
        assertArrayEquals(new int[] {0, 0, 1, 2, 0, 2}, got);
    }
}
