package io.streamlearn.flink;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

/**
 * {@link WarmUp}, the rule the encoder routes the warm-up's bundles by, and how {@link
 * BundleRotation} keys a bundle whose learner the encoder named.
 */
class WarmUpTest {
    @Test
    void eachSubtaskSendsItsShareRoundedUpInWholeBundles() {
        WarmUp warm = new WarmUp(10_000, 3, false);
        assertEquals(3334, warm.share());
        // bundles of 1,500 events: 0, 1,500 and 3,000 sent before them are under the share
        assertTrue(warm.next(1500));
        assertTrue(warm.next(1500));
        assertTrue(warm.next(1500));
        assertFalse(warm.next(1500));
        assertFalse(warm.next(0));
    }

    @Test
    void aBundleOfRejectedEventsDoesNotEndTheWarmUp() {
        WarmUp warm = new WarmUp(100, 1, false);
        assertTrue(warm.next(0));
        assertTrue(warm.next(99));
        assertTrue(warm.next(1));
        assertFalse(warm.next(1));
    }

    @Test
    void noWarmUpWhenRestoredOrNoneAsked() {
        assertFalse(new WarmUp(10_000, 2, true).next(1));
        assertFalse(new WarmUp(0, 2, false).next(1));
        assertThrows(IllegalArgumentException.class, () -> new WarmUp(10, 0, false));
    }

    @Test
    void theWarmUpGoesToLearnerZeroAndTheRestAsTheBalanceSays() {
        assertEquals(0, WarmUp.learner(true, 3));
        assertEquals(3, WarmUp.learner(false, 3));
        assertEquals(-1, WarmUp.learner(false, -1));
    }

    @Test
    void aNamedLearnerIsKeptAndTheOthersRotate() {
        BundleRotation rotation = new BundleRotation();
        int[] got = new int[6];
        int[] named = {0, 0, -1, -1, -1, 2};
        for (int i = 0; i < named.length; i++) {
            got[i] = BundleRotation.learner(rotation.key(1, named[i]), 3);
        }
        // partition 1's rotation starts at learner 1 with its first bundle dealt in turn
        assertArrayEquals(new int[] {0, 0, 1, 2, 0, 2}, got);
    }
}
