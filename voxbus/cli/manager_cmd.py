import argparse
def register(sub, common): pass
