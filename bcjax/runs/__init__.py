"""A paper run's names, data and files: the strategies (`strategies`), the
versions' data of one seed (`run_data`) and the run folder's layout and
checked records (`rundir`). The layers above read runs only through these.
"""
