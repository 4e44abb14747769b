"""Process code: the worker that consumes the queue, the local stack (`ucai up`), and the vLLM launcher."""
