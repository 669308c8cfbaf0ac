package io.streamlearn.flink;

import java.nio.charset.StandardCharsets;

/**
 * One event (or a whole message) the encoder could not use, and why: the JVM side of Python's
 * {@code streamlearn.events.Rejected}.
 *
 * <p>Why it exists: a bad event must never stop the training job; it goes to the dead-letter
 * topic with the field it failed on, a reason in the same words as the Python decoder's
 * ({@code str(EventError)}), where it was in its envelope, and its bytes.
 *
 * <p>{@link #raw} is the whole message for a rejection of the message or of a single-event
 * message, and the item's own bytes, sliced from the message as sent, for an event inside an
 * envelope (Python gives {@code orjson.dumps(item)} there: the same event, possibly with other
 * spacing; the slice keeps exactly what the producer wrote).
 */
public final class Rejection {
    private final String field;
    private final String reason;
    private final Integer index;
    private final byte[] raw;

    /** A rejection; {@code index} is the position in an envelope, null for the whole message. */
    public Rejection(String field, String reason, Integer index, byte[] raw) {
        this.field = field;
        this.reason = reason;
        this.index = index;
        this.raw = raw;
    }

    /** The field that was wrong ({@code features.age}, {@code label}, {@code message}, ...). */
    public String field() {
        return field;
    }

    /** The reason, as Python's {@code str(EventError)}. */
    public String reason() {
        return reason;
    }

    /** The position inside an envelope; null when the whole message is rejected. */
    public Integer index() {
        return index;
    }

    /** The rejected bytes (see the class comment). */
    public byte[] raw() {
        return raw;
    }

    /**
     * The dead-letter record of this rejection (see {@link DeadLetter#record}): bounded, the
     * same bytes as Python's {@code streamlearn.events.dead_letter} writes.
     */
    public byte[] toDeadLetter(String stage, String topic, int partition, long offset, long atMs) {
        return DeadLetter.record(stage, topic, partition, offset, index, field, reason, raw, atMs);
    }

    @Override
    public String toString() {
        return "Rejection(" + field + ", " + reason + ", index=" + index + ", "
                + new String(raw, StandardCharsets.UTF_8) + ")";
    }
}
