"""``python -m negatives.chapters.difficulty``: the chapter's computations without the notebook."""

from negatives.chapters.difficulty.analysis import main

main()
