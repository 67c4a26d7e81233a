import ArgumentParser

VfioUserBench.main()
