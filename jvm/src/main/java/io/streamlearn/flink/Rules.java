package io.streamlearn.flink;

import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * The event contract's rejections in the JVM: every code with its field, expected and got
 * templates, the limits, and the one place a rejection's text is rendered from its code and
 * facts.
 *
 * <p>Why it exists: the contract ({@code streamlearn/contract/__init__.py}, {@code RULES}) is
 * the one definition of what each rejection says; the encoder's error sites name a code and
 * the facts only ({@link Rejection#of}), and the text is made here, from templates that are the
 * contract's strings verbatim. Two checks keep this table the contract's: {@code
 * tests/test_jvm_contract.py} compares it, code by code and string by string, with {@code
 * RULES} (the tool prints it with {@code EncodeTool --rules}), and the conformance corpus
 * replay ({@code CorpusReplayTest}) compares every rendered reason with the corpus's.
 *
 * <p>A template names facts in braces: {@code {name}}, {@code {value}} (the offending value,
 * shown by {@link PyRepr#shortRepr}, as the contract's {@code show}), {@code {count}}, {@code
 * {detail}}, {@code {label_expected}} (from the fact {@code task}), {@code {max_features}}
 * (default {@link #MAX_FEATURES}) and {@code {max_events}}.
 */
final class Rules {
    /** The contract's {@code MAX_FEATURES}: the encoder's default {@code maxFeatures}. */
    static final int MAX_FEATURES = 10_000;
    /** The contract's {@code EVENT_FIELDS}, sorted: an event has these fields and no other. */
    static final String[] EVENT_FIELDS = {"features", "id", "key", "label", "ts"};
    /** The contract's {@code TASKS}, in the order of the encoder's task numbers. */
    static final String[] TASKS = {"regression", "binary", "multiclass"};
    /** The contract's {@code LABEL_EXPECTED}, by task number. */
    static final String[] LABEL_EXPECTED = {
        "a finite number", "a label (0/1 or true/false)", "a class name (string) or an integer class"
    };

    /** One rejection's templates (the contract's {@code Rule} without its doc). */
    record Rule(String field, String expected, String got) {}

    private static final String NAME_EXPECTED = "string feature names (an integer is read as its"
            + " decimal text; convert others with str())";

    /** Every rejection, by code, in the contract's order. */
    static final Map<String, Rule> RULES;

    static {
        Map<String, Rule> r = new LinkedHashMap<>();
        r.put("message.not_json",
                new Rule("message", "a JSON object (an event or an envelope)", "bad JSON ({detail})"));
        r.put("events.not_list", new Rule("events", "a list of events", "{value}"));
        r.put("events.empty", new Rule("events", "at least one event", "an empty list"));
        r.put("events.too_many",
                new Rule("events", "at most {max_events} events per request", "{count} events"));
        r.put("event.not_object", new Rule("event", "a JSON object with `features`", "{value}"));
        r.put("event.unknown_field",
                new Rule("{name}", "only the fields " + String.join(", ", EVENT_FIELDS),
                        "an unknown field"));
        r.put("features.missing", new Rule("features", "an object of name → value", "nothing"));
        r.put("features.not_object", new Rule("features", "an object of name → value", "{value}"));
        r.put("features.empty", new Rule("features", "at least one feature", "an empty object"));
        r.put("features.too_many",
                new Rule("features", "at most {max_features} features", "{count}"));
        r.put("features.empty_name", new Rule("features", "non-empty string feature names", "''"));
        r.put("features.name_not_string", new Rule("features", NAME_EXPECTED, "{value}"));
        r.put("features.not_finite", new Rule("features.{name}", "a finite number", "{value}"));
        r.put("features.bad_list_item",
                new Rule("features.{name}", "a list of strings", "an item {value}"));
        r.put("features.bad_value", new Rule("features.{name}",
                "a number, a string, a list of strings or true/false", "{value}"));
        r.put("features.dense_not_number",
                new Rule("features.{name}", "a number (it is a dense feature)", "{value}"));
        r.put("label.missing", new Rule("label", "{label_expected}", "nothing"));
        r.put("label.invalid", new Rule("label", "{label_expected}", "{value}"));
        r.put("key.invalid", new Rule("key", "a string or an integer", "{value}"));
        r.put("ts.invalid",
                new Rule("ts", "event time in milliseconds (an integer >= 0)", "{value}"));
        r.put("id.invalid", new Rule("id", "a string or an integer", "{value}"));
        RULES = Collections.unmodifiableMap(r);
    }

    private Rules() {}

    /** The rule of {@code code}; an unknown code is a programming error. */
    static Rule rule(String code) {
        Rule rule = RULES.get(code);
        if (rule == null) {
            throw new IllegalArgumentException(
                    "code: expected one of the contract's codes " + RULES.keySet() + ", got " + code);
        }
        return rule;
    }

    /** The field path of a rejection: the rule's field template over the facts. */
    static String field(String code, Map<String, Object> facts) {
        return fill(rule(code).field(), facts);
    }

    /**
     * The human text of a rejection, the contract's {@code message(code, index, **facts)}:
     * {@code field `F` [of event I]: expected E, got G}.
     */
    static String reason(String code, Integer index, Map<String, Object> facts) {
        Rule rule = rule(code);
        return "field `" + fill(rule.field(), facts) + "`"
                + (index == null ? "" : " of event " + index)
                + ": expected " + fill(rule.expected(), facts) + ", got " + fill(rule.got(), facts);
    }

    /** {@code template} with each {@code {fact}} replaced by its rendering. */
    private static String fill(String template, Map<String, Object> facts) {
        int open = template.indexOf('{');
        if (open < 0) {
            return template;
        }
        StringBuilder out = new StringBuilder(template.length() + 32);
        int at = 0;
        while (open >= 0) {
            int close = template.indexOf('}', open);
            out.append(template, at, open);
            out.append(fact(template.substring(open + 1, close), facts));
            at = close + 1;
            open = template.indexOf('{', at);
        }
        return out.append(template, at, template.length()).toString();
    }

    private static String fact(String key, Map<String, Object> facts) {
        switch (key) {
            case "value" -> {
                return PyRepr.shortRepr(need(key, facts));
            }
            case "label_expected" -> {
                return LABEL_EXPECTED[EventEncoder.taskCode((String) need("task", facts))];
            }
            case "max_features" -> {
                Object n = facts.get(key);
                return String.valueOf(n == null ? MAX_FEATURES : n);
            }
            default -> {
                return String.valueOf(need(key, facts));
            }
        }
    }

    private static Object need(String key, Map<String, Object> facts) {
        if (!facts.containsKey(key)) {
            throw new IllegalArgumentException(
                    "facts: expected `" + key + "` for this rule, got only " + facts.keySet());
        }
        return facts.get(key);
    }
}
