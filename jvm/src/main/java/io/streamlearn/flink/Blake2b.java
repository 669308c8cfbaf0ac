package io.streamlearn.flink;

import java.nio.charset.StandardCharsets;

/**
 * BLAKE2b (RFC 7693), unkeyed, with a digest of 1 to 64 bytes and a personalisation string of
 * at most 16 bytes: what {@code hashlib.blake2b(data, digest_size=n, person=p)} computes.
 *
 * <p>Why it exists: streamlearn hashes feature names and string values with BLAKE2b so that a
 * feature lands in the same slot in every process and on every machine (see {@code
 * streamlearn/features.py}). Encoding events in the JVM must give the very same slots as the
 * Python reference, so it needs the very same hash; the JDK has no BLAKE2b.
 *
 * <p>{@link #hash64} is the allocation-free form used on the hot path: the first 8 bytes of an
 * 8-byte digest, read as a little-endian {@code long} (Python's {@code int.from_bytes(digest,
 * "little")}).
 */
public final class Blake2b {
    private static final long[] IV = {
        0x6A09E667F3BCC908L, 0xBB67AE8584CAA73BL, 0x3C6EF372FE94F82BL, 0xA54FF53A5F1D36F1L,
        0x510E527FADE682D1L, 0x9B05688C2B3E6C1FL, 0x1F83D9ABFB41BD6BL, 0x5BE0CD19137E2179L
    };

    private static final byte[][] SIGMA = {
        {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
        {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
        {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4},
        {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
        {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13},
        {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
        {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11},
        {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
        {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5},
        {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
        {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
        {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3}
    };

    private Blake2b() {}

    /**
     * The personalisation string as the two little-endian words BLAKE2b mixes into its state.
     *
     * @throws IllegalArgumentException if {@code person} is longer than 16 bytes
     */
    public static long[] personWords(byte[] person) {
        if (person.length > 16) {
            throw new IllegalArgumentException(
                    "person: expected at most 16 bytes, got " + person.length);
        }
        byte[] padded = new byte[16];
        System.arraycopy(person, 0, padded, 0, person.length);
        return new long[] {readLong(padded, 0, 8), readLong(padded, 8, 8)};
    }

    /** The full digest of {@code data} ({@code digestSize} bytes, 1 to 64). */
    public static byte[] digest(byte[] data, int digestSize, byte[] person) {
        if (digestSize < 1 || digestSize > 64) {
            throw new IllegalArgumentException(
                    "digestSize: expected 1 to 64, got " + digestSize);
        }
        long[] p = personWords(person);
        long[] h = hash(data, 0, data.length, digestSize, p[0], p[1]);
        byte[] out = new byte[digestSize];
        for (int i = 0; i < digestSize; i++) {
            out[i] = (byte) (h[i >>> 3] >>> (8 * (i & 7)));
        }
        return out;
    }

    /**
     * The 8-byte digest of {@code data[off, off+len)} as a little-endian long, personalised with
     * the words from {@link #personWords}.
     */
    public static long hash64(byte[] data, int off, int len, long personLo, long personHi) {
        return hash(data, off, len, 8, personLo, personHi)[0];
    }

    /** {@link #hash64} of a string's UTF-8 bytes. */
    public static long hash64(String text, long personLo, long personHi) {
        byte[] b = text.getBytes(StandardCharsets.UTF_8);
        return hash64(b, 0, b.length, personLo, personHi);
    }

    private static long[] hash(
            byte[] data, int off, int len, int digestSize, long personLo, long personHi) {
        long[] h = IV.clone();
        h[0] ^= 0x01010000L ^ digestSize; // fanout 1, depth 1, no key
        h[6] ^= personLo;
        h[7] ^= personHi;
        long[] m = new long[16];
        long[] v = new long[16];
        long counter = 0;
        int pos = off;
        int end = off + len;
        while (end - pos > 128) {
            for (int i = 0; i < 16; i++) {
                m[i] = readLong(data, pos + 8 * i, 8);
            }
            counter += 128;
            compress(h, m, v, counter, false);
            pos += 128;
        }
        int rest = end - pos; // 0..128: the last block, zero padded
        for (int i = 0; i < 16; i++) {
            int at = pos + 8 * i;
            int n = Math.max(0, Math.min(8, end - at));
            m[i] = n == 0 ? 0 : readLong(data, at, n);
        }
        counter += rest;
        compress(h, m, v, counter, true);
        return h;
    }

    private static long readLong(byte[] b, int at, int n) {
        long x = 0;
        for (int i = n - 1; i >= 0; i--) {
            x = (x << 8) | (b[at + i] & 0xFFL);
        }
        return x;
    }

    private static void compress(long[] h, long[] m, long[] v, long counter, boolean last) {
        System.arraycopy(h, 0, v, 0, 8);
        System.arraycopy(IV, 0, v, 8, 8);
        v[12] ^= counter; // inputs here are far below 2^64 bytes: the high counter word stays 0
        if (last) {
            v[14] = ~v[14];
        }
        for (int r = 0; r < 12; r++) {
            byte[] s = SIGMA[r];
            g(v, 0, 4, 8, 12, m[s[0]], m[s[1]]);
            g(v, 1, 5, 9, 13, m[s[2]], m[s[3]]);
            g(v, 2, 6, 10, 14, m[s[4]], m[s[5]]);
            g(v, 3, 7, 11, 15, m[s[6]], m[s[7]]);
            g(v, 0, 5, 10, 15, m[s[8]], m[s[9]]);
            g(v, 1, 6, 11, 12, m[s[10]], m[s[11]]);
            g(v, 2, 7, 8, 13, m[s[12]], m[s[13]]);
            g(v, 3, 4, 9, 14, m[s[14]], m[s[15]]);
        }
        for (int i = 0; i < 8; i++) {
            h[i] ^= v[i] ^ v[i + 8];
        }
    }

    private static void g(long[] v, int a, int b, int c, int d, long x, long y) {
        v[a] = v[a] + v[b] + x;
        v[d] = Long.rotateRight(v[d] ^ v[a], 32);
        v[c] = v[c] + v[d];
        v[b] = Long.rotateRight(v[b] ^ v[c], 24);
        v[a] = v[a] + v[b] + y;
        v[d] = Long.rotateRight(v[d] ^ v[a], 16);
        v[c] = v[c] + v[d];
        v[b] = Long.rotateRight(v[b] ^ v[c], 63);
    }
}
