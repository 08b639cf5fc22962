"""One module per book chapter: its frozen parameter dataclass and the compute functions that
turn the package's public functions into the chapter's tables."""
