package recstream.flink;

import java.math.BigDecimal;
import java.nio.charset.StandardCharsets;

import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonFactory;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonParser;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonToken;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.StreamReadConstraints;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.json.JsonReadFeature;

/**
 * The text form of a JSON line's top-level user_id, the one features.ids.stable_id hashes: a
 * string as it is, an integer in decimal, an integral float as the integer Python's int() makes
 * of the double. "" when the line is not a JSON object or has no such user_id (the Python side
 * rejects it). The last user_id wins, as in Python's json.
 */
public final class UserKey {
    // What Python's json reads and Jackson by default does not: NaN and Infinity, numbers of any
    // length, any depth, strings of any length (the Python side rejects oversized records itself).
    private static final JsonFactory JSON = JsonFactory.builder()
            .enable(JsonReadFeature.ALLOW_NON_NUMERIC_NUMBERS)
            .streamReadConstraints(StreamReadConstraints.builder()
                    .maxNumberLength(Integer.MAX_VALUE)
                    .maxNestingDepth(Integer.MAX_VALUE)
                    .maxStringLength(Integer.MAX_VALUE)
                    .build())
            .build();

    private UserKey() {
    }

    /** Prints of(line) for each line of stdin (read as ISO-8859-1), one per line: how tests check it against Python. */
    public static void main(String[] args) throws java.io.IOException {
        java.io.BufferedReader in = new java.io.BufferedReader(
                new java.io.InputStreamReader(System.in, StandardCharsets.ISO_8859_1));
        java.io.PrintStream out = new java.io.PrintStream(System.out, false, "UTF-8");
        for (String line = in.readLine(); line != null; line = in.readLine()) {
            out.println(of(line));
        }
        out.flush();
    }

    /** line: the record's bytes as ISO-8859-1 characters (how the job reads them). */
    public static String of(String line) {
        String found = "";
        try (JsonParser p = JSON.createParser(line.getBytes(StandardCharsets.ISO_8859_1))) {
            if (p.nextToken() != JsonToken.START_OBJECT) {
                return "";
            }
            while (p.nextToken() == JsonToken.FIELD_NAME) {
                String name = p.currentName();
                JsonToken value = p.nextToken();
                if ("user_id".equals(name)) {
                    found = text(p, value);
                }
                p.skipChildren();
            }
        } catch (Exception e) {
            return "";
        }
        return found;
    }

    private static String text(JsonParser p, JsonToken value) throws java.io.IOException {
        switch (value) {
            case VALUE_STRING:
                return p.getText();
            case VALUE_NUMBER_INT:
                return p.getBigIntegerValue().toString();
            case VALUE_NUMBER_FLOAT:
                double d = p.getDoubleValue();
                return Double.isFinite(d) && d == Math.rint(d) ? new BigDecimal(d).toBigInteger().toString() : "";
            default:
                return "";
        }
    }
}
