"""The asr recipe's checks before any work: every file and directory the config names.

A run that would stop at the third split's missing manifest after validating two splits, or
at a misspelt noise directory after generating the corpus, stops before the first stage
instead, with one line per problem.
"""

from __future__ import annotations

import pathlib

from data_prep import rirs_noises
from tsasr.data import layout
from tsasr.hmm import external

SOURCES = {"corpus": ("builtin", "manifest", "librispeech"), "noise": ("builtin", "musan")}
NOISE_KINDS = ("music", "noise", "speech")  # a MUSAN-layout directory's subdirectories


def problems(config) -> list[str]:
    """One line per problem with the data the config points at; [] when it can start."""
    found = []
    for section, allowed in SOURCES.items():
        if config[section].source not in allowed:
            found.append(f"{section}.source={config[section].source!r}: must be one of {', '.join(allowed)}")
    if config.corpus.source == "manifest":
        for split in layout.SPLITS:
            path = config.corpus.manifests.get(split, "")
            if not path:
                found.append(
                    f"corpus.manifests.{split} is not set: corpus.source='manifest' needs a manifest for each of "
                    f"{', '.join(layout.SPLITS)}"
                )
            elif not pathlib.Path(path).expanduser().is_file():
                found.append(f"{path}: corpus.manifests.{split} not found")
    if config.corpus.source == "librispeech":
        root = pathlib.Path(config.corpus.librispeech.dir).expanduser()
        if not config.corpus.librispeech.dir or not root.is_dir():
            found.append(f"{config.corpus.librispeech.dir or '(empty)'}: corpus.librispeech.dir is not a directory")
        else:
            for split in layout.SPLITS:
                for subset in config.corpus.librispeech[split].split(","):
                    if subset.strip() and not (root / subset.strip()).is_dir():
                        found.append(
                            f"{root / subset.strip()}: LibriSpeech subset of corpus.librispeech.{split} not found"
                        )
    found += _extra_test_problems(config)
    if config.noise.source == "musan":
        root = pathlib.Path(config.noise.musan_dir).expanduser()
        if not config.noise.musan_dir or not root.is_dir():
            found.append(f"{config.noise.musan_dir or '(empty)'}: noise.musan_dir is not a directory")
        elif not any((root / kind).is_dir() for kind in NOISE_KINDS):
            found.append(f"{root}: noise.musan_dir has none of the subdirectories {', '.join(NOISE_KINDS)}")
    for condition, path in config.noisify.test_manifests.items():
        if path and not pathlib.Path(path).expanduser().is_file():
            found.append(f"{path}: noisify.test_manifests.{condition} not found")
    found += external.problems(config.hmm)
    if config.noisify.rirs_dir:
        found += rirs_noises.problems(config.noisify.rirs_dir, tuple(config.noisify.rirs_subsets))
    return found


def _extra_test_problems(config) -> list[str]:
    """corpus.extra_tests: well-formed, and each source found."""
    try:
        extra = layout.extra_tests(config.corpus.extra_tests)
    except ValueError as err:
        return [str(err)]
    if extra and config.corpus.source == "builtin":
        return [
            "corpus.extra_tests: the built-in corpus has one test set; extra ones need corpus.source "
            "'manifest' or 'librispeech'"
        ]
    found = []
    for name, source in extra.items():
        if config.corpus.source == "manifest" and not pathlib.Path(source).expanduser().is_file():
            found.append(f"{source}: corpus.extra_tests {name!r} manifest not found")
        if config.corpus.source == "librispeech":
            root = pathlib.Path(config.corpus.librispeech.dir).expanduser()
            for subset in filter(None, (s.strip() for s in source.split("+"))):
                if root.is_dir() and not (root / subset).is_dir():
                    found.append(f"{root / subset}: LibriSpeech subset of corpus.extra_tests {name!r} not found")
    return found
