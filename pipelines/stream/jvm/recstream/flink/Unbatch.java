package recstream.flink;

import org.apache.flink.api.common.functions.FlatMapFunction;
import org.apache.flink.util.Collector;

/** A batch of lines back as one record per line, in order (for the sinks, which write a line each). */
public class Unbatch implements FlatMapFunction<String[], String> {
    private static final long serialVersionUID = 1L;

    @Override
    public void flatMap(String[] lines, Collector<String> out) {
        for (String line : lines) {
            out.collect(line);
        }
    }
}
