package io.streamlearn.flink;

import java.nio.charset.StandardCharsets;

/**
 * Signed feature hashing as the event contract defines it ({@code HASH} in {@code
 * streamlearn/contract/__init__.py}, its constants in {@link ContractRules}): the slot and
 * sign of a number or boolean {@code name}, or of a string {@code name=value}.
 *
 * <p>Why it exists: the JVM encoder must put every feature in the same slot, with the same sign,
 * as the Python {@code FeatureHasher}, or a model trained from JVM-encoded batches would not
 * serve Python-encoded queries. The steps mirror {@code _hash_name}, {@code _hash_value} and
 * {@code _mix_one}:
 *
 * <ul>
 *   <li>name hash: BLAKE2b-64 of the UTF-8 name, personalised {@code "sl.name"}, low 53 bits;
 *   <li>value hash: BLAKE2b-64 of the UTF-8 value, personalised {@code "sl.value"}, low 53
 *       bits, and 1 where that is 0 (0 is the "value" of numbers and booleans);
 *   <li>mix: murmur3's 64-bit finaliser over {@code name * golden ^ value};
 *   <li>slot: the mix's low {@code bits} bits; sign: -1 if its top bit is set, else +1.
 * </ul>
 */
public final class FeatureHash {
    /** Hashes are cut to 53 bits (exact in a float64 on the Python side). */
    public static final long HASH_MASK = (1L << ContractRules.HASH_BITS) - 1;

    private static final long GOLDEN = ContractRules.HASH_GOLDEN;
    private static final long MIX_1 = ContractRules.HASH_MIX_1;
    private static final long MIX_2 = ContractRules.HASH_MIX_2;
    private static final int SHIFT = ContractRules.HASH_SHIFT;
    private static final long[] NAME_PERSON = Blake2b.personWords(
            ContractRules.HASH_NAME_PERSON.getBytes(StandardCharsets.US_ASCII));
    private static final long[] VALUE_PERSON = Blake2b.personWords(
            ContractRules.HASH_VALUE_PERSON.getBytes(StandardCharsets.US_ASCII));

    private FeatureHash() {}

    /** The 53-bit hash of a feature name given as UTF-8 bytes. */
    public static long nameHash(byte[] utf8, int off, int len) {
        return Blake2b.hash64(utf8, off, len, NAME_PERSON[0], NAME_PERSON[1]) & HASH_MASK;
    }

    /** The 53-bit hash of a string value given as UTF-8 bytes; never 0. */
    public static long valueHash(byte[] utf8, int off, int len) {
        long h = Blake2b.hash64(utf8, off, len, VALUE_PERSON[0], VALUE_PERSON[1]) & HASH_MASK;
        return h == 0 ? 1 : h;
    }

    /** {@link #nameHash} of a string. */
    public static long nameHash(String name) {
        byte[] b = name.getBytes(StandardCharsets.UTF_8);
        return nameHash(b, 0, b.length);
    }

    /** {@link #valueHash} of a string. */
    public static long valueHash(String value) {
        byte[] b = value.getBytes(StandardCharsets.UTF_8);
        return valueHash(b, 0, b.length);
    }

    /** Python's {@code _mix_one}: two 53-bit hashes to one 64-bit hash (value 0 for numbers). */
    public static long mix(long nameHash, long valueHash) {
        long h = nameHash * GOLDEN;
        h ^= valueHash;
        h ^= h >>> SHIFT;
        h *= MIX_1;
        h ^= h >>> SHIFT;
        h *= MIX_2;
        return h ^ (h >>> SHIFT);
    }

    /**
     * The contract's {@code cross_entry}: the hash of the cross of the entries at {@code slotA}
     * (of the cross's first feature) and {@code slotB}; its {@link #slot} is the crossed entry's
     * slot, and its {@link #sign} multiplies the product of the two entries' values.
     */
    public static long cross(int slotA, int slotB) {
        return mix((slotA & 0xFFFFFFFFL) | ContractRules.HASH_CROSS_TAG, slotB & 0xFFFFFFFFL);
    }

    /** The slot of a mixed hash among {@code 2^bits} hashed slots. */
    public static int slot(long mixed, int bits) {
        return (int) (mixed & ((1L << bits) - 1));
    }

    /** The sign of a mixed hash: -1 if its top bit is set, else +1. */
    public static int sign(long mixed) {
        return mixed < 0 ? -1 : 1;
    }
}
