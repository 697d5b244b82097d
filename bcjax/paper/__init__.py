"""The paper's reproduction (Hu et al., KDD 2022): the experiment of one seed
(`experiment`), its stage plan (`stages`) run by the serial or parallel
executor (`workers`), the main job (`pipeline`), and the report (`report`,
`retrieval_report`, `multiseed`, `plots`).
"""
