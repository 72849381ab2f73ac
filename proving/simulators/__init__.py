"""HTTP simulators of the providers Herald delivers to, for tests and the demo."""
