package io.streamlearn.flink;

import java.nio.charset.StandardCharsets;
import java.util.HashMap;
import java.util.Map;

/**
 * One event (or a whole message) the encoder could not use, and why: the JVM side of the
 * contract's {@code streamlearn.contract.Rejection}.
 *
 * <p>Why it exists: a bad event must never stop the training job; it goes to the dead-letter
 * topic with the rule it broke ({@link #code}, one of the contract's stable codes such as
 * {@code features.not_finite}), the field it failed on, where it was in its envelope, and its
 * bytes. The encoder's error sites give only the code and the facts of the case ({@link #of});
 * the field path and the human text are rendered from them in one place, {@link Rules}.
 *
 * <p>{@link #raw} is the whole message for a rejection of the message or of a single-event
 * message, and the item's own bytes, sliced from the message as sent, for an event inside an
 * envelope (Python gives {@code orjson.dumps(item)} there: the same event, possibly with other
 * spacing; the slice keeps exactly what the producer wrote).
 */
public final class Rejection {
    private final String code;
    private final String field;
    private final String reason;
    private final Integer index;
    private final byte[] raw;

    private Rejection(String code, String field, String reason, Integer index, byte[] raw) {
        this.code = code;
        this.field = field;
        this.reason = reason;
        this.index = index;
        this.raw = raw;
    }

    /**
     * The rejection under the rule {@code code}, its field and reason rendered by {@link Rules}
     * from {@code facts} ({@code name, value, ...} pairs: see {@link Rules}).
     *
     * @param index the position in an envelope, null for the whole message (or a single event)
     * @throws IllegalArgumentException for a code the contract does not have, or a fact missing
     */
    static Rejection of(String code, Integer index, byte[] raw, Object... facts) {
        Map<String, Object> named = facts(facts);
        return new Rejection(code, Rules.field(code, named), Rules.reason(code, index, named),
                index, raw);
    }

    /** {@code name, value, ...} pairs as a map. */
    static Map<String, Object> facts(Object... pairs) {
        Map<String, Object> named = new HashMap<>();
        for (int i = 0; i < pairs.length; i += 2) {
            named.put((String) pairs[i], pairs[i + 1]);
        }
        return named;
    }

    /** The contract's code of the rule broken ({@code features.bad_value}, {@code label.missing}, ...). */
    public String code() {
        return code;
    }

    /** The field that was wrong ({@code features.age}, {@code label}, {@code message}, ...). */
    public String field() {
        return field;
    }

    /** The human text, the contract's {@code message(code, index, **facts)}. */
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
        return DeadLetter.record(stage, topic, partition, offset, index, code, field, reason, raw,
                atMs);
    }

    @Override
    public String toString() {
        return "Rejection(" + code + ", " + field + ", " + reason + ", index=" + index + ", "
                + new String(raw, StandardCharsets.UTF_8) + ")";
    }
}
