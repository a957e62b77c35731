"""Training data: sources, synthetic tasks, tokenization with a disk cache, and batches.

```python
from research import data
from research.config.data import DataConfig

ds = data.build(DataConfig(dataset="tinyshakespeare", seq_len=256, batch_size=64))
it = ds.train_iterator()            # or train_iterator(state=saved_state)
batch = next(it)                    # input_ids, targets, loss_mask, segment_ids
saved_state = it.state()            # JSON-serialisable
for batch in ds.eval_batches(): ...
```
"""

from research.data.batching import Layout, TrainIterator
from research.data.dataset import Dataset, build
from research.data.documents import TokenizedSplit

__all__ = ["Dataset", "Layout", "TokenizedSplit", "TrainIterator", "build"]
