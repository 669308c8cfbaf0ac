package io.streamlearn.flink;

import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.HashMap;
import java.util.Map;

/**
 * Remembered slots and signs of feature names and of (name, string value) pairs, looked up by
 * their UTF-8 bytes where they lie in the message, so the hot path builds no String and hashes
 * each distinct feature once.
 *
 * <p>Why it exists: BLAKE2b costs far more than a table look-up, and a stream repeats the same
 * names and values over and over. A name's entry carries its numeric slot and sign, whether it
 * is dense, a stamp to detect a name given twice in one event, and the table of its string
 * values. The cache is bounded: past {@code limit} remembered values it is emptied, between
 * events only (results never change, only the time to get them).
 */
final class SlotCache {
    /** One remembered feature name. */
    static final class Name {
        final byte[] bytes;
        final int hash;
        final long nameHash;
        /** The slot of a number or boolean under this name (dense: its own slot). */
        final int numSlot;
        /** Its sign (dense: +1). */
        final double numSign;
        final boolean dense;
        /** Its index among the crossed names ({@link Crosses#indexOf}), or -1. */
        int cross = -1;
        /** The event in which this name was last seen (duplicate detection). */
        int seen = -1;
        /** The name that followed this one in the last event (a guess for the next). */
        Name next;
        /** Names of up to 8 bytes: those bytes as a little-endian long, and its mask. */
        final long head8;
        final long mask8;

        /**
         * The table of string values, two longs per slot: the key (keys of up to 7 bytes whole,
         * with their length in the top byte; longer keys their first 8 bytes, the rest compared
         * in {@link #valueKeys}), then the table hash (high half) and the packed entry with
         * bit 30 set (low half; 0 marks a free slot). One cache line per look-up.
         */
        long[] values = new long[16];
        byte[][] valueKeys = new byte[8][];
        int valueCount;

        Name(byte[] bytes, int hash, long nameHash, int numSlot, double numSign, boolean dense) {
            this.bytes = bytes;
            this.hash = hash;
            this.nameHash = nameHash;
            this.numSlot = numSlot;
            this.numSign = numSign;
            this.dense = dense;
            this.mask8 = bytes.length >= 8 ? -1L : (1L << (8 * bytes.length)) - 1;
            long x = 0;
            for (int i = Math.min(8, bytes.length) - 1; i >= 0; i--) {
                x = (x << 8) | (bytes[i] & 0xFFL);
            }
            this.head8 = x;
        }
    }

    private final int bits;
    private final Crosses crosses;
    private final Map<String, Integer> denseSlots = new HashMap<>();
    private final int limit;
    private Name[] names = new Name[256];
    /** The first name of the last event (a guess for the next event's first). */
    Name first;
    private int nameCount;
    private int valueTotal;

    SlotCache(int bits, String[] dense, int limit) {
        this(bits, dense, limit, null);
    }

    /** A cache whose names know their index among the crossed names of {@code crosses}. */
    SlotCache(int bits, String[] dense, int limit, Crosses crosses) {
        this.crosses = crosses;
        this.bits = bits;
        this.limit = limit;
        for (int i = 0; i < dense.length; i++) {
            denseSlots.put(dense[i], (1 << bits) + i);
        }
    }

    /** True if {@code name} is one of the dense features. */
    boolean isDense(String name) {
        return denseSlots.containsKey(name);
    }

    /** Empty the cache if it grew past its bound; call between events only. */
    void bound() {
        if (valueTotal + nameCount > limit) {
            names = new Name[256];
            first = null;
            nameCount = 0;
            valueTotal = 0;
        }
    }

    /** A key of up to 7 bytes with its length in the top byte; else the first 8 bytes. */
    static long packed(byte[] b, int off, int len) {
        long x = 0;
        for (int i = Math.min(len, 8) - 1; i >= 0; i--) {
            x = (x << 8) | (b[off + i] & 0xFFL);
        }
        return len < 8 ? x | ((long) len << 56) : x;
    }

    /** A hash of {@code b[off, off+len)} for the tables (not the feature hash). */
    static int spanHash(byte[] b, int off, int len, long packed) {
        long h = (packed ^ len) * 0x9E3779B97F4A7C15L;
        for (int i = off + 8, end = off + len; i < end; i++) {
            h = (h ^ b[i]) * 0x100000001B3L;
        }
        return (int) (h ^ (h >>> 32));
    }

    /**
     * {@link #value} of a key of at most 7 bytes, {@code b[off, off+len)}, whose {@link #packed}
     * form the caller built while reading it: no second pass over the bytes.
     */
    int shortValue(Name name, long x, byte[] b, int off, int len) {
        long hh = (x ^ len) * 0x9E3779B97F4A7C15L; // spanHash of a key of fewer than 8 bytes
        int h = (int) (hh ^ (hh >>> 32));
        long[] t = name.values;
        int mask = (t.length >>> 1) - 1;
        int i = h & mask;
        while (true) {
            long meta = t[2 * i + 1];
            if (meta == 0) {
                return addValue(name, b, off, len, h, x);
            }
            if ((int) (meta >>> 32) == h && t[2 * i] == x) {
                return (int) meta & ~0x40000000;
            }
            i = (i + 1) & mask;
        }
    }

    /** {@code k} equals {@code b[off, off+len)} (short keys: a plain loop beats the intrinsic). */
    static boolean same(byte[] k, byte[] b, int off, int len) {
        if (k.length != len) {
            return false;
        }
        for (int i = 0; i < len; i++) {
            if (k[i] != b[off + i]) {
                return false;
            }
        }
        return true;
    }

    /** The entry of the name in {@code b[off, off+len)} (valid UTF-8, non-empty). */
    Name name(byte[] b, int off, int len) {
        int h = spanHash(b, off, len, packed(b, off, len));
        Name[] t = names;
        int mask = t.length - 1;
        int i = h & mask;
        while (true) {
            Name n = t[i];
            if (n == null) {
                return addName(b, off, len, h);
            }
            if (n.hash == h && same(n.bytes, b, off, len)) {
                return n;
            }
            i = (i + 1) & mask;
        }
    }

    private Name addName(byte[] b, int off, int len, int h) {
        byte[] bytes = Arrays.copyOfRange(b, off, off + len);
        long nameHash = FeatureHash.nameHash(bytes, 0, len);
        Integer dense = denseSlots.isEmpty()
                ? null
                : denseSlots.get(new String(bytes, StandardCharsets.UTF_8));
        Name n;
        if (dense != null) {
            n = new Name(bytes, h, nameHash, dense, 1.0, true);
        } else {
            long mixed = FeatureHash.mix(nameHash, 0);
            n = new Name(bytes, h, nameHash, FeatureHash.slot(mixed, bits),
                    FeatureHash.sign(mixed), false);
        }
        if (crosses != null) {
            n.cross = crosses.indexOf(new String(bytes, StandardCharsets.UTF_8));
        }
        if (2 * (nameCount + 1) > names.length) {
            rehashNames();
        }
        Name[] t = names;
        int mask = t.length - 1;
        int i = h & mask;
        while (t[i] != null) {
            i = (i + 1) & mask;
        }
        t[i] = n;
        nameCount++;
        return n;
    }

    private void rehashNames() {
        Name[] old = names;
        Name[] t = new Name[old.length * 2];
        int mask = t.length - 1;
        for (Name n : old) {
            if (n != null) {
                int i = n.hash & mask;
                while (t[i] != null) {
                    i = (i + 1) & mask;
                }
                t[i] = n;
            }
        }
        names = t;
    }

    /**
     * The packed entry of the string value {@code b[off, off+len)} (valid UTF-8) under {@code
     * name}: the slot in the low 31 bits, the top bit set for sign -1.
     */
    int value(Name name, byte[] b, int off, int len) {
        long x = packed(b, off, len);
        int h = spanHash(b, off, len, x);
        long[] t = name.values;
        int mask = (t.length >>> 1) - 1;
        int i = h & mask;
        while (true) {
            long meta = t[2 * i + 1];
            if (meta == 0) {
                return addValue(name, b, off, len, h, x);
            }
            if ((int) (meta >>> 32) == h && t[2 * i] == x
                    && (len < 8 || same(name.valueKeys[i], b, off, len))) {
                return (int) meta & ~0x40000000;
            }
            i = (i + 1) & mask;
        }
    }

    private int addValue(Name name, byte[] b, int off, int len, int h, long x) {
        long mixed = FeatureHash.mix(name.nameHash, FeatureHash.valueHash(b, off, len));
        int entry = FeatureHash.slot(mixed, bits) | (mixed < 0 ? 0x80000000 : 0);
        if (2 * (name.valueCount + 1) > name.valueKeys.length) {
            rehashValues(name);
        }
        insert(name.values, name.valueKeys, h, x, entry,
                len < 8 ? null : Arrays.copyOfRange(b, off, off + len));
        name.valueCount++;
        valueTotal++;
        return entry;
    }

    private static void insert(long[] t, byte[][] keys, int h, long x, int entry, byte[] key) {
        int mask = (t.length >>> 1) - 1;
        int i = h & mask;
        while (t[2 * i + 1] != 0) {
            i = (i + 1) & mask;
        }
        t[2 * i] = x;
        t[2 * i + 1] = ((long) h << 32) | ((entry | 0x40000000) & 0xFFFFFFFFL);
        keys[i] = key;
    }

    private static void rehashValues(Name name) {
        long[] old = name.values;
        byte[][] oldKeys = name.valueKeys;
        long[] t = new long[2 * old.length];
        byte[][] keys = new byte[oldKeys.length * 2][];
        for (int j = 0; j < oldKeys.length; j++) {
            long meta = old[2 * j + 1];
            if (meta != 0) {
                insert(t, keys, (int) (meta >>> 32), old[2 * j],
                        (int) meta & ~0x40000000, oldKeys[j]);
            }
        }
        name.values = t;
        name.valueKeys = keys;
    }

    /** The slot of a packed value entry. */
    static int entrySlot(int entry) {
        return entry & 0x7FFFFFFF;
    }

    /** The sign of a packed value entry. */
    static double entrySign(int entry) {
        return entry < 0 ? -1.0 : 1.0;
    }
}
