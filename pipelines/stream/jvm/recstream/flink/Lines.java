package recstream.flink;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;

/**
 * Lines packed by Python as one UTF-8 byte array, each line ended by a NUL byte: one array crosses
 * from Python to the JVM instead of a string per line. JSON text has no NUL byte, so the lines
 * packed this way (accepted events, examples) never hold one.
 */
public final class Lines {
    private Lines() {}

    public static List<String> split(byte[] packed) {
        List<String> out = new ArrayList<>();
        int start = 0;
        for (int i = 0; i < packed.length; i++) {
            if (packed[i] == 0) {
                out.add(new String(packed, start, i - start, StandardCharsets.UTF_8));
                start = i + 1;
            }
        }
        if (start != packed.length) {
            throw new IllegalArgumentException("packed lines must end with a NUL byte");
        }
        return out;
    }
}
