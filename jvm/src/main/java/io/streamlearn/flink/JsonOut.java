package io.streamlearn.flink;

import java.io.ByteArrayOutputStream;
import java.nio.charset.StandardCharsets;

/**
 * Small JSON writing and UTF-8 checking helpers that behave like orjson, Python's JSON library in
 * streamlearn.
 *
 * <p>Why it exists: dead-letter records and multiclass labels written in the JVM must be the
 * same bytes (dead letters) or the same values (labels) as Python writes, and whether bytes are
 * valid UTF-8 must be decided as strictly as Python decodes ({@code bytes.decode("utf-8")} and
 * orjson both refuse overlong forms, surrogates and code points above U+10FFFF).
 */
final class JsonOut {
    private static final byte[] HEX = "0123456789abcdef".getBytes(StandardCharsets.US_ASCII);

    private JsonOut() {}

    /** Append {@code text} as a JSON string the way orjson escapes it. */
    static void string(ByteArrayOutputStream out, String text) {
        byte[] utf8 = text.getBytes(StandardCharsets.UTF_8);
        string(out, utf8, 0, utf8.length);
    }

    /** Append valid UTF-8 bytes as a JSON string the way orjson escapes them. */
    static void string(ByteArrayOutputStream out, byte[] utf8, int off, int len) {
        out.write('"');
        int from = off;
        int end = off + len;
        for (int i = off; i < end; i++) {
            int c = utf8[i] & 0xFF;
            if (c >= 0x20 && c != '"' && c != '\\') {
                continue;
            }
            out.write(utf8, from, i - from);
            from = i + 1;
            out.write('\\');
            switch (c) {
                case '"' -> out.write('"');
                case '\\' -> out.write('\\');
                case '\b' -> out.write('b');
                case '\f' -> out.write('f');
                case '\n' -> out.write('n');
                case '\r' -> out.write('r');
                case '\t' -> out.write('t');
                default -> {
                    out.write('u');
                    out.write('0');
                    out.write('0');
                    out.write(HEX[c >>> 4]);
                    out.write(HEX[c & 15]);
                }
            }
        }
        out.write(utf8, from, end - from);
        out.write('"');
    }

    static void ascii(ByteArrayOutputStream out, String text) {
        byte[] b = text.getBytes(StandardCharsets.US_ASCII);
        out.write(b, 0, b.length);
    }

    /** True if every byte of {@code b[off, off+len)} is below 0x80. */
    static boolean isAscii(byte[] b, int off, int len) {
        for (int i = off, end = off + len; i < end; i++) {
            if (b[i] < 0) {
                return false;
            }
        }
        return true;
    }

    /**
     * The length of the well-formed UTF-8 sequence starting at {@code b[i]} (a byte of 0x80 or
     * more), or -1 if it is not one (overlong, surrogate, above U+10FFFF, cut short).
     */
    static int utf8Sequence(byte[] b, int i, int end) {
        int c = b[i] & 0xFF;
        if (c >= 0xC2 && c <= 0xDF) {
            return i + 1 < end && cont(b[i + 1]) ? 2 : -1;
        }
        if (c >= 0xE0 && c <= 0xEF) {
            if (i + 2 >= end) {
                return -1;
            }
            int c1 = b[i + 1] & 0xFF;
            boolean ok =
                    c == 0xE0
                            ? c1 >= 0xA0 && c1 <= 0xBF
                            : c == 0xED ? c1 >= 0x80 && c1 <= 0x9F : cont(b[i + 1]);
            return ok && cont(b[i + 2]) ? 3 : -1;
        }
        if (c >= 0xF0 && c <= 0xF4) {
            if (i + 3 >= end) {
                return -1;
            }
            int c1 = b[i + 1] & 0xFF;
            boolean ok =
                    c == 0xF0
                            ? c1 >= 0x90 && c1 <= 0xBF
                            : c == 0xF4 ? c1 >= 0x80 && c1 <= 0x8F : cont(b[i + 1]);
            return ok && cont(b[i + 2]) && cont(b[i + 3]) ? 4 : -1;
        }
        return -1;
    }

    private static boolean cont(byte x) {
        return (x & 0xC0) == 0x80;
    }

    /** True if {@code b[off, off+len)} is well-formed UTF-8 (as Python decodes it). */
    static boolean isUtf8(byte[] b, int off, int len) {
        int end = off + len;
        int i = off;
        while (i < end) {
            if (b[i] >= 0) {
                i++;
                continue;
            }
            int n = utf8Sequence(b, i, end);
            if (n < 0) {
                return false;
            }
            i += n;
        }
        return true;
    }
}
