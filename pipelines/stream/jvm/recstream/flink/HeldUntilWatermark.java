package recstream.flink;

import org.apache.flink.streaming.api.operators.AbstractStreamOperator;
import org.apache.flink.streaming.api.operators.OneInputStreamOperator;
import org.apache.flink.streaming.api.watermark.Watermark;

/**
 * An operator that holds records in memory and emits what it holds before every watermark, before
 * every checkpoint barrier and at the end of the input: downstream sees each record before any
 * watermark that followed it, and nothing is held across a checkpoint (so there is no state).
 */
public abstract class HeldUntilWatermark<I, O> extends AbstractStreamOperator<O>
        implements OneInputStreamOperator<I, O> {
    private static final long serialVersionUID = 1L;

    /** Emit everything held. */
    protected abstract void emit();

    @Override
    public void processWatermark(Watermark mark) throws Exception {
        emit();
        super.processWatermark(mark);
    }

    @Override
    public void prepareSnapshotPreBarrier(long checkpointId) throws Exception {
        emit();
        super.prepareSnapshotPreBarrier(checkpointId);
    }

    @Override
    public void finish() throws Exception {
        emit();
        super.finish();
    }
}
