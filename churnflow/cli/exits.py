"""Exit statuses of `churnflow`: each means one thing whichever command returns it, so scripts and
schedulers can act on them."""

EXIT_INPUT_ERROR = 2  # an error in the input, or a failed pipeline step
DRIFT_EXIT = 3  # drift found
EXIT_NOT_RELEASED = 4  # a model was trained but the evaluation gate refused it
EXIT_OTHER_VERSIONS = 5  # drift not judged: the window holds too few predictions of the model's version
