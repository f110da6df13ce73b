"""The tools beside the engines: the test data generator and the bench command."""
