"""What a run's config.yaml must hold, and what may change when a run is resumed."""
from app.config.load import set_key, validate
from app.util.errors import UserError

# Sections every run's config.yaml has had since the first version, "output" last: a file cut
# short lacks at least that one.
RUN_SECTIONS = frozenset({"model", "data", "train", "optimizer", "output"})


def complete_run_config(written) -> bool:
    """Whether a run's loaded config.yaml has every section (a cut file may still be YAML);
    train.py --resume and study reports refuse one that has not."""
    return isinstance(written, dict) and RUN_SECTIONS <= set(written)


# What may change when a run is resumed: where and how fast it runs, not what it computes.
RESUMABLE_KEYS = {"train.device", "train.threads", "data.num_workers", "data.cache",
                  "data.cache_max_mb", "data.root", "train.channels_last"}


def changed_keys(run_cfg: dict, cfg: dict) -> list:
    """The ``section.name`` keys on which a run's config and ``cfg`` disagree about what the
    run computes: not where it is written or logged (output, log, train.log_freq) nor where
    and how fast it runs (RESUMABLE_KEYS)."""
    keys = {f"{s}.{n}" for c in (run_cfg, cfg) for s, section in c.items()
            if isinstance(section, dict) and s not in ("output", "log") for n in section}
    keys -= RESUMABLE_KEYS | {"train.log_freq"}

    def get(c, key):
        section, _, name = key.partition(".")
        return c.get(section, {}).get(name)
    return sorted(k for k in keys if get(run_cfg, k) != get(cfg, k))


def resume_config_overrides(cfg: dict, overrides, given_config=None) -> dict:
    """Apply ``overrides`` to a resumed run's config, refusing any that change the run."""
    if given_config:
        raise UserError("--resume continues a run on its own config.yaml; "
                        "drop -c/--model (start a new run to change them)")
    for key, value in overrides:
        if key not in RESUMABLE_KEYS:
            raise UserError(f"--resume keeps the run's schedule; '{key}' cannot change "
                            f"(only {', '.join(sorted(RESUMABLE_KEYS))} may)")
        set_key(cfg, key, value)
    return validate(cfg)
