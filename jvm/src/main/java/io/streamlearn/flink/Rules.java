package io.streamlearn.flink;

import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * The event contract's rejections in the JVM: the one place a rejection's field and text are
 * rendered from its code and facts, with the contract's templates ({@link ContractRules}).
 *
 * <p>Why it exists: the contract ({@code streamlearn/contract/__init__.py}, {@code RULES}) is
 * the one definition of what each rejection says; the encoder's error sites name a code and
 * the facts only ({@link Rejection#of}), and the text is made here. Two checks keep {@link
 * ContractRules} the contract's: {@code tests/test_jvm_contract.py} compares it, code by code
 * and string by string, with the contract (the tool prints it with {@code EncodeTool
 * --rules}), and the conformance corpus replay ({@code CorpusReplayTest}) compares every
 * rendered reason with the corpus's.
 *
 * <p>A template names facts in braces: {@code {name}}, {@code {value}} (the offending value,
 * shown by {@link JsonText#show}, as the contract's {@code show}), {@code {count}}, {@code
 * {detail}}, {@code {label_expected}} (from the fact {@code task}), {@code {max_features}}
 * (default {@link #MAX_FEATURES}) and {@code {max_events}}.
 */
final class Rules {
    /** The contract's {@code MAX_FEATURES}: the encoder's default {@code maxFeatures}. */
    static final int MAX_FEATURES = ContractRules.MAX_FEATURES;
    /** The contract's {@code EVENT_FIELDS}, sorted: an event has these fields and no other. */
    static final String[] EVENT_FIELDS = ContractRules.EVENT_FIELDS;
    /** The contract's {@code TASKS}, in the order of the encoder's task numbers. */
    static final String[] TASKS = ContractRules.TASKS;
    /** The contract's {@code LABEL_EXPECTED}, by task number. */
    static final String[] LABEL_EXPECTED = ContractRules.LABEL_EXPECTED;

    /** One rejection's templates (the contract's {@code Rule} without its doc). */
    record Rule(String field, String expected, String got) {}

    /** Every rejection, by code, in the contract's order. */
    static final Map<String, Rule> RULES;

    static {
        Map<String, Rule> r = new LinkedHashMap<>();
        ContractRules.RULES.forEach((code, t) -> r.put(code, new Rule(t[0], t[1], t[2])));
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
                return JsonText.show(need(key, facts));
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
