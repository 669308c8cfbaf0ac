package io.streamlearn.flink;

import java.io.ByteArrayOutputStream;
import java.math.BigDecimal;
import java.math.BigInteger;
import java.math.MathContext;
import java.math.RoundingMode;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.Map;

/**
 * The event contract's {@code show}: a decoded JSON value written as JSON, cut to 60 characters.
 *
 * <p>Why it exists: a rejection's reason quotes the offending value, and the contract
 * ({@code streamlearn/contract/__init__.py}, {@code show} and {@code show_float}) defines how,
 * in JSON's own terms, so that the reasons read the same whichever side decoded the event and
 * neither side imitates the other's language: no spaces; {@code true}, {@code false}, {@code
 * null}; strings in double quotes with RFC 8785's escapes only; integers in decimal, whole;
 * floats with the fewest digits that read back to the same double, in ECMAScript's layout (a
 * whole value without an exponent keeps {@code .0}, a zero its sign); members in the order they
 * came. Values are those of the encoder's slow path: {@link String}, {@link Long} and {@link
 * BigInteger}, {@link Double}, {@link Boolean}, {@code null}, {@link List} and {@link Map}
 * (insertion-ordered).
 *
 * <p>Only the beginning is written, as far as the cut, so a list or object nested as deep as
 * the decoder reads (1024 levels) is quoted by its first brackets and the recursion here stops
 * there. The conformance corpus ({@code CorpusReplayTest}) holds the two writings equal.
 */
final class JsonText {
    private static final int LIMIT = 60;
    // write a little more than LIMIT code points (a control character takes six), then cut
    private static final int RENDER_CHARS = 6 * LIMIT + 16;

    private JsonText() {}

    /** The contract's {@code show(value)}: JSON, cut to 57 characters and "..." past 60. */
    static String show(Object value) {
        StringBuilder sb = new StringBuilder();
        try {
            write(value, sb);
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

    private static void write(Object v, StringBuilder sb) {
        if (v instanceof List<?> list) {
            sb.append('[');
            check(sb); // a deep value: stop at the cut, not at the bottom
            boolean first = true;
            for (Object item : list) {
                if (!first) {
                    sb.append(',');
                }
                first = false;
                write(item, sb);
                check(sb);
            }
            sb.append(']');
        } else if (v instanceof Map<?, ?> map) {
            sb.append('{');
            check(sb);
            boolean first = true;
            for (Map.Entry<?, ?> e : map.entrySet()) {
                if (!first) {
                    sb.append(',');
                }
                first = false;
                write(e.getKey(), sb);
                sb.append(':');
                check(sb);
                write(e.getValue(), sb);
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
            sb.append("null");
        } else if (v instanceof Boolean b) {
            sb.append(b ? "true" : "false");
        } else if (v instanceof String s) {
            string(s, sb);
        } else if (v instanceof Double d) {
            sb.append(number(d));
        } else {
            sb.append(v); // Long, BigInteger: decimal
        }
    }

    /**
     * A JSON string as {@link JsonOut#string} escapes it (RFC 8785's escapes: quote, backslash
     * and the characters below U+0020), of its first {@code LIMIT + 1} code points only when it
     * is longer: escapes only lengthen, so the cut text is the same and a long string costs no
     * more than a short one.
     */
    static void string(String s, StringBuilder sb) {
        int points = s.codePointCount(0, Math.min(s.length(), 2 * (LIMIT + 1)));
        String head = points > LIMIT ? s.substring(0, s.offsetByCodePoints(0, LIMIT + 1)) : s;
        ByteArrayOutputStream out = new ByteArrayOutputStream(head.length() + 8);
        JsonOut.string(out, head);
        sb.append(out.toString(StandardCharsets.UTF_8));
        if (head.length() < s.length()) {
            throw new Full(); // long enough to be cut
        }
    }

    /**
     * The contract's {@code show_float}: the fewest significant digits that read back to
     * {@code d} (the closest such decimal), laid out as ECMAScript's {@code Number::toString}
     * lays them out, a whole value without an exponent with {@code .0}, a zero with its sign.
     */
    static String number(double d) {
        if (Double.isNaN(d)) {
            return "NaN";
        }
        if (Double.isInfinite(d)) {
            return d > 0 ? "Infinity" : "-Infinity";
        }
        String sign = Double.doubleToRawLongBits(d) < 0 ? "-" : "";
        if (d == 0.0) {
            return sign + "0.0";
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
        BigDecimal stripped = shortest.stripTrailingZeros();
        String digits = stripped.unscaledValue().toString();
        int k = digits.length();
        int n = k - stripped.scale(); // the value is 0.DIGITS times 10**n
        StringBuilder sb = new StringBuilder(sign);
        if (k <= n && n <= 21) {
            sb.append(digits);
            sb.append("0".repeat(n - k));
            sb.append(".0");
        } else if (0 < n && n <= 21) {
            sb.append(digits, 0, n).append('.').append(digits, n, k);
        } else if (-6 < n && n <= 0) {
            sb.append("0.").append("0".repeat(-n)).append(digits);
        } else {
            int e = n - 1;
            sb.append(digits.charAt(0));
            if (k > 1) {
                sb.append('.').append(digits, 1, k);
            }
            sb.append('e').append(e < 0 ? '-' : '+').append(Math.abs(e));
        }
        return sb.toString();
    }
}
