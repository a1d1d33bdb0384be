package recstream.flink;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;

import org.apache.flink.api.java.tuple.Tuple2;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;

/**
 * Batches of lines (packed: Lines) with their times (little-endian int64s, one per line) back as
 * one line per record, in time order between watermarks:
 * lines are held until the next watermark (or checkpoint barrier, or the end) and then emitted
 * sorted by time, ties in arrival order. The user function emits the examples of each user
 * bucket's timer as one batch; this puts the examples of every bucket whose timer the same
 * watermark fired back in the order of their label times.
 */
public class InTimeOrder extends HeldUntilWatermark<Tuple2<byte[], byte[]>, String> {
    private static final long serialVersionUID = 1L;
    private transient ArrayList<Tuple2<Long, String>> held;

    @Override
    public void open() throws Exception {
        super.open();
        held = new ArrayList<>();
    }

    @Override
    public void processElement(StreamRecord<Tuple2<byte[], byte[]>> record) {
        ByteBuffer times = ByteBuffer.wrap(record.getValue().f0).order(ByteOrder.LITTLE_ENDIAN);
        List<String> lines = Lines.split(record.getValue().f1);
        if (times.capacity() != 8 * lines.size()) {
            throw new IllegalArgumentException(times.capacity() + " bytes of times for " + lines.size() + " lines");
        }
        for (int i = 0; i < lines.size(); i++) {
            held.add(Tuple2.of(times.getLong(8 * i), lines.get(i)));
        }
    }

    @Override
    protected void emit() {
        if (held.isEmpty()) {
            return;
        }
        held.sort(Comparator.comparingLong(pair -> pair.f0));  // a stable sort
        for (Tuple2<Long, String> pair : held) {
            output.collect(new StreamRecord<>(pair.f1));
        }
        held.clear();
    }
}
