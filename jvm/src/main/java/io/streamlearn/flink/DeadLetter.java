package io.streamlearn.flink;

import java.io.ByteArrayOutputStream;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.Arrays;
import java.util.Base64;

/**
 * The dead-letter record of one rejected event (or message): the JVM side of Python's {@code
 * streamlearn.events.dead_letter}, the same JSON bytes for the same arguments.
 *
 * <p>Why it exists: a rejected event must never stop the training job, so its record must always
 * fit in a Kafka message, however large the event was. A record is bounded: at most {@link
 * #VALUE_BYTES} of the rejected bytes (base64, their one copy), the reason and the field cut to
 * {@link #REASON_CHARS} and {@link #FIELD_CHARS} characters, so no record exceeds {@link
 * #MAX_BYTES}. When the bytes were cut, {@code size} and {@code sha256} (always written) describe
 * all of them and {@code topic}, {@code partition}, {@code offset} say where to read them again.
 *
 * <p>Keys, in this order: {@code stage, topic, partition, offset, index, code, field, reason, size,
 * sha256, truncated, value_b64, at_ms}. The work happens only for rejected events.
 */
public final class DeadLetter {
    /** At most this many bytes of the rejected value are kept (a prefix past it). */
    public static final int VALUE_BYTES = 64 * 1024;
    /** The reason is cut past this many characters (code points), ending in "...". */
    public static final int REASON_CHARS = 1000;
    /** The field is cut past this many characters (code points), ending in "...". */
    public static final int FIELD_CHARS = 200;
    /** No record is longer (for a topic name of at most 249 characters, Kafka's limit). */
    public static final int MAX_BYTES = 96 * 1024;

    private static final byte[] HEX =
            "0123456789abcdef".getBytes(java.nio.charset.StandardCharsets.US_ASCII);

    private DeadLetter() {}

    /**
     * The record's JSON bytes.
     *
     * @param stage {@code train} or {@code score}: the job that rejected the event
     * @param topic the source topic: with {@code partition} and {@code offset}, where the
     *     whole message can be read again
     * @param partition the source partition
     * @param offset the message's offset in it
     * @param index the event's position in its envelope; null for the whole message
     * @param code the contract's code of the rule broken ({@code features.not_finite}, ...);
     *     null for a failure no rule names
     * @param field the field the event failed on
     * @param reason why, in the words of Python's {@code str(EventError)}
     * @param raw the rejected bytes (the message, or the event as sent inside its envelope)
     * @param atMs when, in milliseconds since the epoch
     */
    public static byte[] record(String stage, String topic, int partition, long offset,
            Integer index, String code, String field, String reason, byte[] raw, long atMs) {
        int kept = Math.min(raw.length, VALUE_BYTES);
        ByteArrayOutputStream out = new ByteArrayOutputStream(kept * 4 / 3 + 512);
        JsonOut.ascii(out, "{\"stage\":");
        JsonOut.string(out, stage);
        JsonOut.ascii(out, ",\"topic\":");
        JsonOut.string(out, topic);
        JsonOut.ascii(out, ",\"partition\":" + partition + ",\"offset\":" + offset
                + ",\"index\":" + (index == null ? "null" : index.toString()) + ",\"code\":");
        if (code == null) {
            JsonOut.ascii(out, "null");
        } else {
            JsonOut.string(out, code);
        }
        JsonOut.ascii(out, ",\"field\":");
        JsonOut.string(out, cut(field, FIELD_CHARS));
        JsonOut.ascii(out, ",\"reason\":");
        JsonOut.string(out, cut(reason, REASON_CHARS));
        JsonOut.ascii(out, ",\"size\":" + raw.length + ",\"sha256\":\"");
        for (byte b : sha256(raw)) {
            out.write(HEX[(b >>> 4) & 15]);
            out.write(HEX[b & 15]);
        }
        JsonOut.ascii(out, "\",\"truncated\":" + (raw.length > VALUE_BYTES) + ",\"value_b64\":\"");
        byte[] b64 = Base64.getEncoder().encode(
                kept == raw.length ? raw : Arrays.copyOf(raw, kept));
        out.write(b64, 0, b64.length);
        JsonOut.ascii(out, "\",\"at_ms\":" + atMs + "}");
        return out.toByteArray();
    }

    /** {@code text} unchanged up to {@code limit} code points, else its first limit-3 and "...". */
    static String cut(String text, int limit) {
        if (text.length() <= limit || text.codePointCount(0, text.length()) <= limit) {
            return text;
        }
        return text.substring(0, text.offsetByCodePoints(0, limit - 3)) + "...";
    }

    private static byte[] sha256(byte[] raw) {
        try {
            return MessageDigest.getInstance("SHA-256").digest(raw);
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("SHA-256 is part of every Java platform", e);
        }
    }
}
