"""datalaws.fit"""
