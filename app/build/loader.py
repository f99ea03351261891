"""Data loaders: each rank of a data-parallel job reads its own shard, in a seeded order."""
import paddle

from app.build.device import epoch_seed


def build_loader(dataset, batch_size: int, shuffle: bool, num_workers: int = 0,
                 seed: int = 0, start_epoch: int = 0, collate_fn=None):
    """A DataLoader over a DistributedBatchSampler: each rank reads its own shard.

    The sampler shuffles with ``RandomState(epoch)``; the epoch counter starts at
    ``epoch_seed(seed, start_epoch)`` so the order differs between seeds and a resumed
    run sees the same order an uninterrupted run would have.
    """
    sampler = paddle.io.DistributedBatchSampler(dataset, batch_size=batch_size,
                                                shuffle=shuffle, drop_last=False)
    sampler.set_epoch(epoch_seed(seed, start_epoch))
    return paddle.io.DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers,
                                return_list=True, collate_fn=collate_fn)
