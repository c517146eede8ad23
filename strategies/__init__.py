"""Search strategies on top of NNI's: complexity budgets and multi-objective search."""
