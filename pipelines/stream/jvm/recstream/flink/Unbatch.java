package recstream.flink;

import org.apache.flink.api.common.functions.FlatMapFunction;
import org.apache.flink.util.Collector;

/** Packed lines (Lines) back as one record per line, in order (for the sinks, which write a line each). */
public class Unbatch implements FlatMapFunction<byte[], String> {
    private static final long serialVersionUID = 1L;

    @Override
    public void flatMap(byte[] lines, Collector<String> out) {
        for (String line : Lines.split(lines)) {
            out.collect(line);
        }
    }
}
