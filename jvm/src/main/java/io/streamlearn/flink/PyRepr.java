package io.streamlearn.flink;

import java.math.BigDecimal;
import java.math.BigInteger;
import java.math.MathContext;
import java.math.RoundingMode;
import java.util.List;
import java.util.Map;

/**
 * Python's {@code repr} of decoded JSON values, and the decoder's {@code _short} of it.
 *
 * <p>Why it exists: a rejection's reason quotes the offending value the way the Python decoder
 * does ({@code _short(value)}: {@code repr}, cut to 60 characters), so that dead letters read
 * the same whichever side decoded the event. Values are those of the encoder's slow path:
 * {@link String}, {@link Long} and {@link BigInteger} (Python ints), {@link Double}, {@link
 * Boolean}, {@code null} (None), {@link List} and {@link Map} (insertion-ordered).
 *
 * <p>Only the beginning is rendered, as far as the cut, so a list or object nested as deep as
 * orjson reads (1024 levels) is quoted by its first brackets and the recursion here stops there.
 * Python's {@code _short} writes the same text: it walks lists and dicts with a stack of its own,
 * since {@code repr} itself would overflow Python's recursion limit on such a value.
 *
 * <p>Strings are quoted as Python does (single quotes unless the text holds a single quote and
 * no double quote), with Python's escapes for characters that are not printable; floats are the
 * shortest text that reads back to the same double, in Python's layout ({@code 1e-05}, {@code
 * 1e+16}, {@code 0.0001}, {@code 123.0}).
 */
final class PyRepr {
    private static final int LIMIT = 60;
    // render a little more than LIMIT code points (at most 2 chars each), then cut
    private static final int RENDER_CHARS = 2 * LIMIT + 16;

    private PyRepr() {}

    /** {@code _short(value)}: {@code repr(value)}, cut to 57 characters and "..." past 60. */
    static String shortRepr(Object value) {
        StringBuilder sb = new StringBuilder();
        try {
            repr(value, sb);
        } catch (Full ignored) {
            // long enough to be cut
        }
        int points = sb.codePointCount(0, sb.length());
        if (points <= LIMIT) {
            return sb.toString();
        }
        return sb.substring(0, sb.offsetByCodePoints(0, LIMIT - 3)) + "...";
    }

    private static final class Full extends RuntimeException {
        private static final long serialVersionUID = 1L;

        Full() {
            super(null, null, false, false);
        }
    }

    private static void check(StringBuilder sb) {
        if (sb.length() > RENDER_CHARS) {
            throw new Full();
        }
    }

    private static void repr(Object v, StringBuilder sb) {
        if (v instanceof List<?> list) {
            sb.append('[');
            check(sb); // a deep value: stop at the cut, not at the bottom
            boolean first = true;
            for (Object item : list) {
                if (!first) {
                    sb.append(", ");
                }
                first = false;
                repr(item, sb);
                check(sb);
            }
            sb.append(']');
        } else if (v instanceof Map<?, ?> map) {
            sb.append('{');
            check(sb);
            boolean first = true;
            for (Map.Entry<?, ?> e : map.entrySet()) {
                if (!first) {
                    sb.append(", ");
                }
                first = false;
                repr(e.getKey(), sb);
                sb.append(": ");
                check(sb);
                repr(e.getValue(), sb);
                check(sb);
            }
            sb.append('}');
        } else {
            scalar(v, sb);
            check(sb);
        }
    }

    private static void scalar(Object v, StringBuilder sb) {
        if (v == null) {
            sb.append("None");
        } else if (v instanceof Boolean b) {
            sb.append(b ? "True" : "False");
        } else if (v instanceof String s) {
            string(s, sb);
        } else if (v instanceof Double d) {
            sb.append(floatRepr(d));
        } else {
            sb.append(v); // Long, BigInteger: decimal
        }
    }

    /** Python's {@code repr(str)}. */
    static void string(String s, StringBuilder sb) {
        char quote = s.indexOf('\'') >= 0 && s.indexOf('"') < 0 ? '"' : '\'';
        sb.append(quote);
        int i = 0;
        while (i < s.length()) {
            int cp = s.codePointAt(i);
            i += Character.charCount(cp);
            if (cp == quote || cp == '\\') {
                sb.append('\\').appendCodePoint(cp);
            } else if (cp == '\t') {
                sb.append("\\t");
            } else if (cp == '\n') {
                sb.append("\\n");
            } else if (cp == '\r') {
                sb.append("\\r");
            } else if (cp < 0x20 || cp == 0x7F) {
                hex(sb, "\\x", cp, 2);
            } else if (cp < 0x7F) {
                sb.append((char) cp);
            } else if (printable(cp)) {
                sb.appendCodePoint(cp);
            } else if (cp <= 0xFF) {
                hex(sb, "\\x", cp, 2);
            } else if (cp <= 0xFFFF) {
                hex(sb, "\\u", cp, 4);
            } else {
                hex(sb, "\\U", cp, 8);
            }
            if (sb.length() > RENDER_CHARS + 16) {
                throw new Full();
            }
        }
        sb.append(quote);
    }

    private static void hex(StringBuilder sb, String prefix, int cp, int digits) {
        String h = Integer.toHexString(cp);
        sb.append(prefix);
        for (int k = h.length(); k < digits; k++) {
            sb.append('0');
        }
        sb.append(h);
    }

    /** Python's {@code str.isprintable} for one character: not Other (C*) nor Separator (Z*). */
    private static boolean printable(int cp) {
        switch (Character.getType(cp)) {
            case Character.CONTROL,
                    Character.FORMAT,
                    Character.SURROGATE,
                    Character.PRIVATE_USE,
                    Character.UNASSIGNED,
                    Character.LINE_SEPARATOR,
                    Character.PARAGRAPH_SEPARATOR,
                    Character.SPACE_SEPARATOR:
                return false;
            default:
                return true;
        }
    }

    /** Python's {@code repr(float)}: the shortest digits that read back to {@code d}. */
    static String floatRepr(double d) {
        if (Double.isNaN(d)) {
            return "nan";
        }
        if (Double.isInfinite(d)) {
            return d > 0 ? "inf" : "-inf";
        }
        if (d == 0.0) {
            return (Double.doubleToRawLongBits(d) < 0) ? "-0.0" : "0.0";
        }
        BigDecimal exact = new BigDecimal(Math.abs(d));
        BigDecimal shortest = exact;
        for (int p = 1; p <= 17; p++) {
            BigDecimal r = exact.round(new MathContext(p, RoundingMode.HALF_EVEN));
            if (r.doubleValue() == Math.abs(d)) {
                shortest = r;
                break;
            }
        }
        BigInteger unscaled = shortest.unscaledValue();
        String digits = unscaled.toString();
        int scale = shortest.scale();
        // strip trailing zeros of the digit string
        int strip = digits.length();
        while (strip > 1 && digits.charAt(strip - 1) == '0') {
            strip--;
        }
        scale -= digits.length() - strip;
        digits = digits.substring(0, strip);
        // value = 0.DIGITS * 10^decpt
        int decpt = digits.length() - scale;
        StringBuilder sb = new StringBuilder();
        if (d < 0) {
            sb.append('-');
        }
        if (decpt <= -4 || decpt > 16) {
            sb.append(digits.charAt(0));
            if (digits.length() > 1) {
                sb.append('.').append(digits, 1, digits.length());
            }
            int e = decpt - 1;
            sb.append('e').append(e < 0 ? '-' : '+');
            int abs = Math.abs(e);
            if (abs < 10) {
                sb.append('0');
            }
            sb.append(abs);
        } else if (decpt <= 0) {
            sb.append("0.");
            for (int k = 0; k < -decpt; k++) {
                sb.append('0');
            }
            sb.append(digits);
        } else if (decpt >= digits.length()) {
            sb.append(digits);
            for (int k = digits.length(); k < decpt; k++) {
                sb.append('0');
            }
            sb.append(".0");
        } else {
            sb.append(digits, 0, decpt).append('.').append(digits, decpt, digits.length());
        }
        return sb.toString();
    }
}
