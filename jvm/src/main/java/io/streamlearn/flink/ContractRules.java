// The event contract's data (streamlearn/contract/__init__.py) in the JVM, string for string
// (tests/test_jvm_contract.py compares them): plain data that a generator can write.
package io.streamlearn.flink;

import java.util.LinkedHashMap;
import java.util.Map;

/** The event contract's data, for {@link Rules}. */
final class ContractRules {
    static final int MAX_FEATURES = 10000;
    static final int MAX_BITS = 30;
    static final String HASH_ALGORITHM = "blake2b";
    static final int HASH_DIGEST_SIZE = 8;
    static final String HASH_NAME_PERSON = "sl.name";
    static final String HASH_VALUE_PERSON = "sl.value";
    static final int HASH_BITS = 53;
    static final long HASH_GOLDEN = 0x9E3779B97F4A7C15L;
    static final long HASH_MIX_1 = 0xFF51AFD7ED558CCDL;
    static final long HASH_MIX_2 = 0xC4CEB9FE1A85EC53L;
    static final int HASH_SHIFT = 33;
    static final String[] EVENT_FIELDS = {"features", "id", "key", "label", "ts"};
    static final String[] TASKS = {"regression", "binary", "multiclass"};
    static final String[] LABEL_EXPECTED = {"a finite number", "a label (0/1 or true/false)", "a class name (string) or an integer class"};
    /** code -> {field, expected, got} templates. */
    static final Map<String, String[]> RULES = new LinkedHashMap<>();

    static {
        RULES.put("message.not_json", new String[] {
            "message", "a JSON object (an event or an envelope)", "bad JSON ({detail})"});
        RULES.put("events.not_list", new String[] {
            "events", "a list of events", "{value}"});
        RULES.put("events.empty", new String[] {
            "events", "at least one event", "an empty list"});
        RULES.put("events.too_many", new String[] {
            "events", "at most {max_events} events per request", "{count} events"});
        RULES.put("event.not_object", new String[] {
            "event", "a JSON object with `features`", "{value}"});
        RULES.put("event.unknown_field", new String[] {
            "{name}", "only the fields features, id, key, label, ts", "an unknown field"});
        RULES.put("features.missing", new String[] {
            "features", "an object of name → value", "nothing"});
        RULES.put("features.not_object", new String[] {
            "features", "an object of name → value", "{value}"});
        RULES.put("features.empty", new String[] {
            "features", "at least one feature", "an empty object"});
        RULES.put("features.too_many", new String[] {
            "features", "at most {max_features} features", "{count}"});
        RULES.put("features.empty_name", new String[] {
            "features", "non-empty string feature names", "''"});
        RULES.put("features.name_not_string", new String[] {
            "features", "string feature names (an integer is read as its decimal text; convert others with str())", "{value}"});
        RULES.put("features.not_finite", new String[] {
            "features.{name}", "a finite number", "{value}"});
        RULES.put("features.bad_list_item", new String[] {
            "features.{name}", "a list of strings", "an item {value}"});
        RULES.put("features.bad_value", new String[] {
            "features.{name}", "a number, a string, a list of strings or true/false", "{value}"});
        RULES.put("features.dense_not_number", new String[] {
            "features.{name}", "a number (it is a dense feature)", "{value}"});
        RULES.put("label.missing", new String[] {
            "label", "{label_expected}", "nothing"});
        RULES.put("label.invalid", new String[] {
            "label", "{label_expected}", "{value}"});
        RULES.put("key.invalid", new String[] {
            "key", "a string or an integer", "{value}"});
        RULES.put("ts.invalid", new String[] {
            "ts", "event time in milliseconds (an integer >= 0)", "{value}"});
        RULES.put("id.invalid", new String[] {
            "id", "a string or an integer", "{value}"});
    }

    private ContractRules() {}
}
