package recstream.flink;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.Map;

import org.apache.flink.api.java.tuple.Tuple2;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;

/**
 * Groups event lines into batches, one per user bucket, so that the Python function is called
 * once per batch instead of once per event. A batch holds lines in their arrival order and goes
 * out before the next watermark, at the next checkpoint barrier, every holdMs and at maxLines:
 * downstream sees every line before any watermark that followed it, and no line is held across
 * a checkpoint (so the operator keeps no state). Before each barrier every bucket also gets an
 * empty batch, its function's cue to save what it holds in memory into Flink's state.
 */
public class BatchByUser extends HeldUntilWatermark<String, Tuple2<Integer, String[]>> {
    private static final long serialVersionUID = 1L;
    private final int buckets;
    private final long holdMs;
    private final int maxLines;
    private transient LinkedHashMap<Integer, ArrayList<String>> held;
    private transient int size;

    public BatchByUser(int buckets, long holdMs, int maxLines) {
        if (buckets < 1 || holdMs < 1 || maxLines < 1) {
            throw new IllegalArgumentException("buckets, holdMs and maxLines must be >= 1");
        }
        this.buckets = buckets;
        this.holdMs = holdMs;
        this.maxLines = maxLines;
    }

    /** The bucket of a line: its user's, or the bucket of "" when it has no readable user_id. */
    public static int bucketOf(String line, int buckets) {
        return Math.floorMod(UserKey.of(line).hashCode(), buckets);
    }

    @Override
    public void open() throws Exception {
        super.open();
        held = new LinkedHashMap<>();
        schedule();
    }

    private void schedule() {
        long at = getProcessingTimeService().getCurrentProcessingTime() + holdMs;
        getProcessingTimeService().registerTimer(at, time -> {
            emit();
            schedule();
        });
    }

    @Override
    public void processElement(StreamRecord<String> record) {
        String line = record.getValue();
        held.computeIfAbsent(bucketOf(line, buckets), b -> new ArrayList<>()).add(line);
        if (++size >= maxLines) {
            emit();
        }
    }

    @Override
    public void prepareSnapshotPreBarrier(long checkpointId) throws Exception {
        super.prepareSnapshotPreBarrier(checkpointId);
        for (int bucket = 0; bucket < buckets; bucket++) {
            output.collect(new StreamRecord<>(Tuple2.of(bucket, new String[0])));
        }
    }

    @Override
    protected void emit() {
        if (size == 0) {
            return;
        }
        for (Map.Entry<Integer, ArrayList<String>> batch : held.entrySet()) {
            output.collect(new StreamRecord<>(Tuple2.of(batch.getKey(), batch.getValue().toArray(new String[0]))));
        }
        held.clear();
        size = 0;
    }
}
