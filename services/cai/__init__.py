"""The Constitutional AI algorithms, free of process code: the critique → revision loop, the judge, ranking,
preference pairs and prompt categorisation. Each runner takes a queued job and the model roles, returns its result."""
