"""datalaws.data"""
